"""RDED (official selection, seeded): entry point `rded` (group `ddbench.methods`) -> Rded."""

from ddbench.methods.rded.method import Rded, RdedConfig

__all__ = ["Rded", "RdedConfig"]
