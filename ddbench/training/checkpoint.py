"""Atomic training checkpoints and the random state that makes a resumed run exact.

A checkpoint is written to a temporary file of its own (named after the host and pid, so two
processes training the same job never share one) and renamed over the old one, so a process
killed at any moment (kill -9 included) leaves either the previous checkpoint or the new one,
never a torn file; a failed write (full disk) removes its temporary file. Everything in it is
tensors and Python primitives, so it loads with `torch.load(..., weights_only=True)`: opening a
checkpoint never runs code from it.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ddbench.core.errors import CheckpointError
from ddbench.core.files import torch_save_atomic, unreadable_reason

#: bump when what `fit` stores changes incompatibly (3: the classifier's state is `fit`'s, and
#: trainer configs nest their optimiser settings under `optim`)
CHECKPOINT_FORMAT = 3

RandomSource = torch.Generator | np.random.Generator


@dataclass
class ResumePoint:
    """Where a training keeps its state: saved every `every` epochs (classifier epoch view) or
    steps (`fit`), picked up on the next run. `identity` (the resolved config, say) must match the
    saved one, so a checkpoint of another configuration is refused instead of silently resumed.

    `optional`: the state is a disposable cache (students, teachers) rather than a file the user
    keeps (a fine-tune's output folder): one that cannot be used is moved aside with a warning and
    the training starts over, one that cannot be saved costs only the ability to resume, and it is
    deleted when the training finishes or diverges."""

    path: Path
    every: int = 10
    identity: Mapping[str, Any] | None = None
    optional: bool = False

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.every < 1:
            raise CheckpointError(f"checkpoint interval must be at least 1, got {self.every} (for {self.path})")


def save_atomic(payload: Mapping[str, Any], path: Path) -> None:
    """torch.save to a temporary file of this process, then rename over `path` (atomic on POSIX
    and Windows). Raises StorageError (naming `path`) when the disk is full or read-only."""
    path = Path(path)
    with contextlib.suppress(OSError):
        path.with_name(path.name + ".partial").unlink()  # the shared temporary name of older versions
    torch_save_atomic(dict(payload), path)


def load_checkpoint(resume: ResumePoint) -> dict | None:
    """The saved state at `resume.path` (None when there is none), checked against `identity`."""
    if not resume.path.is_file():
        return None
    try:
        state = torch.load(resume.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or a pickle that wants to run code
        raise CheckpointError(f"training checkpoint {resume.path} is unreadable ({unreadable_reason(exc)}); "
                              "delete it to start over") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"training checkpoint {resume.path} was written by another ddbench version; "
                              "delete it to start over")
    if resume.identity is not None and state.get("identity") != _plain(resume.identity):
        raise CheckpointError(f"training checkpoint {resume.path} was made with another configuration; "
                              "delete it or use another output folder")
    return state


def checkpoint_payload(resume: ResumePoint, **state: Any) -> dict:
    """The dict `save_atomic` writes: format, identity and the caller's state."""
    return {"format": CHECKPOINT_FORMAT, "identity": _plain(resume.identity), **state}


def _plain(identity: Mapping[str, Any] | None) -> dict | None:
    return None if identity is None else dict(identity)


def load_module_state(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], where: Path) -> None:
    """Strict load; a mismatch is a CheckpointError naming the file."""
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"training checkpoint {where} does not fit the model ({str(exc).splitlines()[0]}); "
                              "delete it to start over") from exc


# ----- random state -----
def random_state(sources: Mapping[str, RandomSource]) -> dict:
    """The state of named generators and of the global RNGs (torch CPU and CUDA, numpy, random),
    as tensors and primitives. Restoring it puts every stream exactly where it was."""
    numpy_global = np.random.get_state(legacy=False)
    state = {
        "sources": {name: _source_state(source) for name, source in sources.items()},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {**numpy_global, "state": {"key": torch.from_numpy(numpy_global["state"]["key"].astype(np.int64)),
                                            "pos": int(numpy_global["state"]["pos"])}},
        "python": random.getstate(),
    }
    return state


def restore_random_state(state: Mapping[str, Any], sources: Mapping[str, RandomSource]) -> None:
    """Inverse of `random_state`; a generator saved under another name is a CheckpointError."""
    if set(state["sources"]) != set(sources):
        raise CheckpointError(f"checkpoint holds random streams {sorted(state['sources'])}, "
                              f"this training draws from {sorted(sources)}; delete the checkpoint to start over")
    for name, source in sources.items():
        if isinstance(source, torch.Generator):
            source.set_state(state["sources"][name])
        else:
            source.bit_generator.state = state["sources"][name]
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_global = dict(state["numpy"])
    numpy_global["state"] = {"key": state["numpy"]["state"]["key"].numpy().astype(np.uint32),
                             "pos": state["numpy"]["state"]["pos"]}
    np.random.set_state(numpy_global)
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))


def _source_state(source: RandomSource):
    if isinstance(source, torch.Generator):
        return source.get_state()
    if isinstance(source, np.random.Generator):
        return source.bit_generator.state
    raise TypeError(f"cannot checkpoint a random source of type {type(source).__name__}")
