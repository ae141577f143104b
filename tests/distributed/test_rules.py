"""The data-parallel rules and the single-process behaviour of `ddbench.core.distributed`, in one
process (the multi-process behaviour is in test_scale_out.py)."""

from __future__ import annotations

import pytest
import torch

from ddbench.core import distributed
from ddbench.core.errors import ConfigError
from ddbench.training.parallel import local_share, share_bounds, share_weight


@pytest.mark.parametrize("count,world", [(7, 2), (20, 3), (8, 8), (3, 4), (100, 7)])
def test_shares_are_contiguous_cover_the_batch_and_weight_to_its_mean(count, world):
    bounds = [share_bounds(count, rank, world) for rank in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == count
    assert all(end == start for (_, end), (start, _) in zip(bounds, bounds[1:]))
    sizes = [end - start for start, end in bounds]
    assert max(sizes) - min(sizes) <= 1
    values = torch.randn(count, dtype=torch.float64)
    # what DDP computes: the average over ranks of each share's mean loss, weighted
    averaged = sum(share_weight(count, r, world) * values[s:e].mean() for r, (s, e) in enumerate(bounds) if e > s) / world
    assert float(averaged) == pytest.approx(float(values.mean()), rel=1e-12)


def test_local_share_is_the_whole_batch_alone_and_needs_an_even_split_under_ddp(monkeypatch):
    batch, labels = torch.arange(12).view(6, 2), torch.arange(6)
    assert torch.equal(local_share(batch), batch)
    monkeypatch.setattr(distributed, "data_parallel_world", lambda: (1, 3))
    share, share_labels = local_share(batch, labels)
    assert torch.equal(share, batch[2:4]) and torch.equal(share_labels, labels[2:4])
    with pytest.raises(ConfigError, match="divisible by 3"):
        local_share(torch.arange(7))


def test_a_single_process_is_rank_0_of_1_and_collectives_return_at_once():
    with distributed.session() as started:
        assert started is False
        assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
        assert distributed.data_parallel_world() == (0, 1) and distributed.is_writer()
        distributed.barrier()
        assert distributed.broadcast_object({"a": 1}) == {"a": 1}
        assert distributed.all_gather_object(3) == [3]
        assert distributed.main_process_only(lambda: "written")() == "written"
        with distributed.local_only():
            assert not distributed.is_distributed()
    assert distributed.process_label() == ""
