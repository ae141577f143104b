"""HIERAMP (coarse-to-fine autoregressive amplification) and its baselines on the VAR generator.

Entry points (group `ddbench.methods`): `hieramp` -> HierAmp, `var-cls` -> VarCls, `var` -> PlainVar.
CLI: `ddbench.methods.hieramp.commands:hieramp_group` (`ddbench hieramp finetune`).
"""

from ddbench.methods.hieramp.method import HierAmp, HierAmpConfig, PlainVar, VarCls, VarClsConfig, VarConfig

__all__ = ["HierAmp", "HierAmpConfig", "PlainVar", "VarCls", "VarClsConfig", "VarConfig"]
