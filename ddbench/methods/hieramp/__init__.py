"""HIERAMP (coarse-to-fine autoregressive amplification) and its baselines on the VAR generator.

Entry points (group `ddbench.methods`): `hieramp` -> HierAmp, `var-cls` -> VarCls, `var` -> PlainVar.
CLI: `ddbench.methods.hieramp.commands:hieramp_group` (`ddbench hieramp finetune`).
Names import on first use, so the CLI can load the command group without torch.
"""

from ddbench.core.lazy import lazy_exports

__all__ = ["HierAmp", "HierAmpConfig", "PlainVar", "VarCls", "VarClsConfig", "VarConfig"]
__getattr__, __dir__ = lazy_exports(__name__, {name: "method" for name in __all__})
