"""RDED (official selection, seeded): entry point `rded` (group `ddbench.methods`) -> Rded."""

from ddbench.methods.rded.method import Rded, RdedSynthesisConfig

__all__ = ["Rded", "RdedSynthesisConfig"]
