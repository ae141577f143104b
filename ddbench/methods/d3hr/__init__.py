"""D3HR (Zhao et al., ICML 2025) as a method plugin on ddbench's DiT in diffusers' variant.

Entry point (group `ddbench.methods`): `d3hr` -> D3HR. What the paper adds: the DDIM inversion and
generation (`ddim`), the class statistics and group sampling (`groups`). The DiT, its weights and
codecs are the shared backbone in `ddbench.generators.dit`.
Names import on first use.
"""

from ddbench.core.lazy import lazy_exports

__all__ = ["D3HR"]
__getattr__, __dir__ = lazy_exports(__name__, {"D3HR": "method"})
