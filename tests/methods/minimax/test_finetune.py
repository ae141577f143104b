"""Minimax fine-tuning on the shared step loop: only the Minimax set moves, an interrupted run resumes
exactly (weights, EMA and class memories), and the written EMA loads as a DiT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddbench.generators.dit.codecs import PixelCodec
from ddbench.generators.dit.loading import load_dit
from ddbench.methods.minimax.finetune import MINIMAX_WEIGHTS, MinimaxFinetuneConfig, adm_center_crop, finetune_minimax
from tests.generators.dit.helpers import TRAIN_TINY as TINY
from tests.generators.dit.helpers import tiny_image_set as tiny_dataset
from tests.generators.dit.helpers import tiny_model

RECIPE = MinimaxFinetuneConfig(epochs=2, batch_size=4, memory_size=3, ema_decay=0.9)


def run(out, stop_after=None):
    model = tiny_model(TINY, seed=2)
    return model, finetune_minimax(model, PixelCodec(), tiny_dataset(), [2, 0, 1], out, resolution=8, config=RECIPE,
                                   stop_after=stop_after)


def test_finetune_trains_the_minimax_set_and_resumes_exactly(tmp_path):
    start = tiny_model(TINY, seed=2).state_dict()
    model, summary = run(tmp_path / "straight")
    assert summary["finished"] and summary["steps"] == 2 * 4  # 18 images, batch 4, drop_last
    after = model.state_dict()
    changed = {key for key in start if not torch.equal(start[key], after[key])}
    assert changed and all(any(k in key for k in ("bias", "gamma", "y_embed")) for key in changed)
    assert "blocks.0.attn.qkv.weight" not in changed and "blocks.1.gamma1" in changed

    _, partial = run(tmp_path / "resumed", stop_after=3)
    assert not partial["finished"]
    _, resumed = run(tmp_path / "resumed")
    assert resumed["resumed_from"] == 3 and resumed["finished"]
    straight_ema = torch.load(tmp_path / "straight" / MINIMAX_WEIGHTS, weights_only=True)
    resumed_ema = torch.load(tmp_path / "resumed" / MINIMAX_WEIGHTS, weights_only=True)
    assert straight_ema.keys() == resumed_ema.keys()
    assert all(torch.equal(straight_ema[k], resumed_ema[k]) for k in straight_ema)
    loaded = load_dit(tmp_path / "straight" / MINIMAX_WEIGHTS, num_heads=2)
    assert torch.equal(loaded.blocks[1].attn.gamma2, straight_ema["blocks.1.attn.gamma2"])


def test_changed_recipe_refuses_the_old_checkpoint(tmp_path):
    from ddbench.core.errors import CheckpointError

    run(tmp_path, stop_after=2)
    model = tiny_model(TINY, seed=2)
    with pytest.raises(CheckpointError, match="another configuration"):
        finetune_minimax(model, PixelCodec(), tiny_dataset(), [2, 0, 1], tmp_path, resolution=8,
                         config=MinimaxFinetuneConfig(epochs=3, batch_size=4, memory_size=3))


def test_adm_center_crop_matches_the_release_steps():
    from PIL import Image

    image = Image.fromarray(np.arange(600 * 520 * 3, dtype=np.uint32).reshape(520, 600, 3).astype(np.uint8))
    out = adm_center_crop(64)(image)
    assert out.size == (64, 64)
    # BOX halvings while the short side is >= 128 (520 -> 260 -> 130 -> 65), then bicubic to 64 on the short side
    expected = image.resize((300, 260), Image.BOX).resize((150, 130), Image.BOX).resize((75, 65), Image.BOX)
    expected = expected.resize((round(75 * 64 / 65), 64), Image.BICUBIC)
    left = (expected.size[0] - 64) // 2
    assert np.array_equal(np.asarray(out), np.asarray(expected)[:, left:left + 64])
