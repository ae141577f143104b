"""Data-parallel training for the shared base: DistributedDataParallel, batch norm over the global
batch, and the rule that splits a global batch into per-rank shares.

The rule: the global batch is exactly the single-process batch (same size, same seeded order and
draws); rank r trains on its contiguous share, and shares differ by at most one example. Gradients
are the global batch's: DDP averages over ranks and each rank weights its share's mean loss by
share / (global / world) (`share_weight`), so an uneven last batch still averages per example.

Batch norm normalises with the statistics of the global batch, as one process would (SyncBatchNorm
on CUDA; on CPU, where torch's SyncBatchNorm does not run, `GlobalBatchNorm` all-reduces the sums
over gloo). A student's accuracy then does not depend on how many processes trained it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ddbench.core import distributed
from ddbench.core.errors import CheckpointError, ConfigError


def share_bounds(count: int, rank: int, world: int) -> tuple[int, int]:
    """[start, end) of rank `rank`'s contiguous share of `count` examples; shares differ by at most one."""
    base, extra = divmod(count, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def share_weight(count: int, rank: int, world: int) -> float:
    """The factor on a share's mean loss that makes DDP's average over ranks the global batch's mean."""
    start, end = share_bounds(count, rank, world)
    return (end - start) * world / count


def local_share(*tensors: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """This process's contiguous share (dim 0) of tensors that describe one global batch; the whole
    batch in a single process. For step losses (`fit`): draw every per-example value for the global
    batch, then keep the share, so each example sees what it sees in a single process. The batch
    must split evenly over the ranks (choose a batch size divisible by the number of processes)."""
    rank, world = distributed.data_parallel_world()
    count = len(tensors[0])
    if any(len(tensor) != count for tensor in tensors):
        raise ValueError("local_share: tensors of one batch must have the same length")
    if count % world:
        raise ConfigError(f"a global batch of {count} examples does not split evenly over {world} processes; "
                          f"use a batch size divisible by {world}")
    start, end = share_bounds(count, rank, world)
    shares = tuple(tensor[start:end] for tensor in tensors)
    return shares[0] if len(shares) == 1 else shares


def shard_key() -> tuple[int, ...]:
    """Extra seed indices for draws that are made per rank (e.g. inside a model's forward on the
    share): () in a single process, so single-process streams stay exactly as they were."""
    rank, world = distributed.data_parallel_world()
    return (rank,) if world > 1 else ()


def check_same_start(position: int, state_file: object, unit: str) -> None:
    """Every rank must resume from the same step or epoch; they differ when the state file lives on
    a disk that only some nodes see."""
    positions = distributed.all_gather_object(position)
    if len(set(positions)) > 1:
        raise CheckpointError(
            f"the processes resumed from different {unit} {positions}: {state_file or 'the training state'} is not "
            "visible to every process; put DDBENCH_HOME (or the output folder) on a filesystem all nodes share"
        )


def wrap_data_parallel(module: nn.Module, device: torch.device, broadcast_buffers: bool) -> nn.Module:
    """`module` in DistributedDataParallel (its initial state is broadcast from rank 0)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # newer torch renames the switch (its initial broadcast happens either way)
    buffers = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters \
        else "broadcast_buffers"
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   **{buffers: broadcast_buffers})


class GlobalBatchNorm(_BatchNorm):
    """Batch norm whose training statistics cover the global batch of all data-parallel ranks,
    through differentiable all-reduces of the per-channel sums (two passes: mean, then centred
    squares, as exact as one process). Outside training or a process group it is plain batch norm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed.is_distributed()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor(float(x.numel() // x.shape[1]), dtype=torch.float64)
        total = float(distributed.all_reduce_sum(count))
        mean = _AllReduceSum.apply(x.sum(dims)) / total
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply(centred.square().sum(dims)) / total
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * (total / max(total - 1.0, 1.0)), factor)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; its gradient is the sum of every rank's upstream gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return distributed.all_reduce_sum(tensor.clone())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return distributed.all_reduce_sum(grad.clone())


class GlobalBatchNormAct(GlobalBatchNorm):
    """`GlobalBatchNorm` for timm's BatchNormAct2d (norm, then its dropout and activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


@contextlib.contextmanager
def synchronized_batchnorm(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """Inside the block every batch norm of `model` normalises over the global batch; the original
    modules come back on exit. The swapped-in modules share the originals' parameters and running
    statistics, so optimisers, checkpoints and the trained weights are unaffected."""
    if distributed.data_parallel_world()[1] == 1:
        yield model
        return
    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _BatchNorm) and not isinstance(child, (GlobalBatchNorm, nn.SyncBatchNorm)):
                setattr(parent, name, _synchronized_copy(child, device))
                swapped.append((parent, name, child))
    try:
        yield model
    finally:
        for parent, name, original in swapped:
            original.train(getattr(parent, name).training)
            setattr(parent, name, original)


def _synchronized_copy(norm: _BatchNorm, device: torch.device) -> nn.Module:
    from timm.layers import BatchNormAct2d
    from timm.layers.norm_act import SyncBatchNormAct

    with_activation = isinstance(norm, BatchNormAct2d)
    if device.type == "cuda":
        cls = SyncBatchNormAct if with_activation else nn.SyncBatchNorm
    else:
        cls = GlobalBatchNormAct if with_activation else GlobalBatchNorm
    synced = cls(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
    if with_activation:
        synced.act, synced.drop = norm.act, norm.drop
    if norm.affine:
        synced.weight, synced.bias = norm.weight, norm.bias
    synced.running_mean, synced.running_var = norm.running_mean, norm.running_var
    synced.num_batches_tracked = norm.num_batches_tracked
    synced.train(norm.training)
    return synced
