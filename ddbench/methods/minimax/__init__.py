"""Minimax diffusion (Gu et al., CVPR 2024) and its ablation row, plain DiT, as method plugins.

Entry points (group `ddbench.methods`): `minimax` -> Minimax, `dit` -> PlainDiT.
CLI: `ddbench.methods.minimax.commands:minimax_group` (`ddbench minimax finetune`).
The generator code (DiT, diffusion, sampling, the Minimax objective) is `ddbench.generators.dit`.
Names import on first use, so the CLI can load the command group without torch.
"""

from ddbench.core.lazy import lazy_exports

__all__ = ["Minimax", "PlainDiT"]
__getattr__, __dir__ = lazy_exports(__name__, {name: "method" for name in __all__})
