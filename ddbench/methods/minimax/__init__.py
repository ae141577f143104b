"""Minimax diffusion (Gu et al., CVPR 2024) and its ablation row, plain DiT, as method plugins.

Entry points (group `ddbench.methods`): `minimax` -> Minimax, `dit` -> PlainDiT.
CLI: `ddbench.methods.minimax.commands:minimax_group` (`ddbench minimax finetune`).
The generator code (DiT, diffusion, sampling, the Minimax objective) is `ddbench.generators.dit`.
"""

from ddbench.methods.minimax.method import Minimax, PlainDiT

__all__ = ["Minimax", "PlainDiT"]
