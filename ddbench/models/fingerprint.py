"""A fingerprint of a model *definition*: what `create_model` builds for (arch, classes, input
size), as parameter names, shapes and seeded initial values.

Cached teachers are keyed by it, so a change to an architecture or its initialisation (in ddbench,
timm or torch) retrains the teacher instead of silently reusing one made from another definition.
`MODEL_CODE_VERSION` covers what the weights cannot show (a changed forward pass): bump it then.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from ddbench.core.hashing import StableDigest

#: bump when a model's forward computation changes without its parameters changing
MODEL_CODE_VERSION = 1


@lru_cache(maxsize=32)
def definition_fingerprint(arch: str, num_classes: int, input_size: int) -> str:
    """16 hex digits over the seeded initial state of `create_model(arch, num_classes, input_size)`."""
    from ddbench.models.factory import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model(arch, num_classes, input_size)
    digest = StableDigest(f"v{MODEL_CODE_VERSION}|{type(model).__module__}.{type(model).__qualname__}")
    for name, tensor in model.state_dict().items():
        digest.update(f"|{name}|{tuple(tensor.shape)}|{tensor.dtype}")
        digest.update(tensor.detach().to(torch.float64).contiguous().numpy().round(6).tobytes())
    return digest.hexdigest(16)
