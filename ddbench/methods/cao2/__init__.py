"""CaO2 (Wang et al., ICCV 2025; hatchetProject/CaO2 @ 6381e50) as a method plugin on ddbench's DiT.

Entry point (group `ddbench.methods`): `cao2` -> CaO2. What the paper adds to DiT sampling: candidate
selection by a classifier and latent refinement (`algorithm`), and the classifier it scores with
(`scorer`). The DiT, its sampler and the sampling-method base are `ddbench.generators.dit`.
Names import on first use, so the CLI can load without torch.
"""

from ddbench.core.lazy import lazy_exports

__all__ = ["CaO2", "CaO2Config"]
__getattr__, __dir__ = lazy_exports(__name__, {name: "method" for name in __all__})
