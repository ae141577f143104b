"""Minimax diffusion (Gu et al., CVPR 2024) and its ablation row, plain DiT, as method plugins.

Entry points (group `ddbench.methods`): `minimax` -> Minimax, `dit` -> PlainDiT.
CLI: `ddbench.methods.minimax.commands:minimax_group` (`ddbench minimax finetune|sample`).
What the paper adds: its objective (`objective`), the fine-tune (`finetune`) and the shipped digits
fine-tune (`digits`). The DiT itself (model, diffusion, sampling, loading, the sampling-method base
shared with `hieramp-dit`) is the released backbone in `ddbench.generators.dit`.
Names import on first use, so the CLI can load the command group without torch.
"""

from ddbench.core.lazy import lazy_exports

__all__ = ["Minimax", "PlainDiT"]
__getattr__, __dir__ = lazy_exports(__name__, {name: "method" for name in __all__})
