"""Deterministic random streams keyed by (seed, purpose, index).

Every random draw in ddbench comes from a generator made here, so that a run sharded by class
across processes draws exactly what a single process would, and nothing depends on the clock.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from ddbench.core.hashing import seed_from_key


def derive_seed(seed: int, purpose: str, *indices: int) -> int:
    """A 63-bit seed that depends only on the arguments (stable across Python versions)."""
    key = f"{int(seed)}|{purpose}|" + "|".join(str(int(i)) for i in indices)
    return seed_from_key(key)


def torch_generator(seed: int, purpose: str, *indices: int, device: str | torch.device = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, purpose, *indices))
    return generator


def numpy_generator(seed: int, purpose: str, *indices: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, purpose, *indices))


def seed_everything(seed: int) -> None:
    """Seed the global RNGs too, for third-party code (timm init, dropout) that draws from them."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
