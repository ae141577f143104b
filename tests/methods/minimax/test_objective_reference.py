"""Minimax's objective as released: the trainable set and four fine-tuning steps (memories, terms, AdamW,
EMA) against the numbers recorded by running vimar-gu/MinimaxDiffusion on the seeded tiny models
(`tests/generators/dit/data/official_reference.json`, beside the DiT numbers of the same run)."""

from __future__ import annotations

import copy

import pytest
import torch

from ddbench.methods.minimax.objective import ClassMemories, MinimaxObjective, MinimaxWeights, minimax_trainable
from tests.generators.dit import helpers as H
from tests.generators.dit.test_dit_reference import REFERENCE, close


def test_minimax_trainable_set():
    model = H.tiny_model(H.MINIMAX, seed=1)
    names = minimax_trainable(model)
    assert names == REFERENCE["trainable"]["names"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == REFERENCE["trainable"]["count"]
    assert not model.blocks[0].attn.qkv.weight.requires_grad and model.blocks[15].attn.gamma1 is None


def test_minimax_fine_tuning_steps():
    expected = REFERENCE["minimax_steps"]
    model = H.tiny_model(H.MINIMAX, seed=1)
    start = copy.deepcopy(model.state_dict())
    minimax_trainable(model)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=expected["lr"], weight_decay=0)
    memories = ClassMemories(num_classes=3, size=expected["memory_size"], latent_shape=(4, 8, 8))
    objective = MinimaxObjective(memories, MinimaxWeights(expected["lambda_rep"], expected["lambda_div"], expected["memory_size"]))
    for batch, recorded in zip(H.minimax_batches(), expected["steps"]):
        labels = torch.tensor([expected["label_map"][c] for c in batch["class_ids"].tolist()])
        loss, metrics = objective(model, batch["latents"], batch["class_ids"], labels, batch["t"], batch["noise"])
        for name in ("diffusion_loss", "representativeness", "diversity"):
            assert metrics[name].item() == pytest.approx(recorded[name], rel=1e-4, abs=1e-7), name
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for mine, averaged in zip(model.parameters(), ema.parameters()):
                averaged.mul_(expected["ema"]).add_(mine, alpha=1 - expected["ema"])
    state, ema_state = model.state_dict(), ema.state_dict()
    for key, values in expected["after"].items():
        close(state[key].flatten()[:4], values, atol=1e-5)
    for key, values in expected["ema_after"].items():
        close(ema_state[key].flatten()[:4], values, atol=1e-6)
    assert torch.equal(state["blocks.3.attn.qkv.weight"], start["blocks.3.attn.qkv.weight"])
    assert memories.seen.tolist() == [6, 6, 4]  # the memories kept only the last 3 of each class
    last_real_of_class_1 = H.minimax_batches()[3]["latents"][1]
    assert any(torch.equal(item, last_real_of_class_1) for item in memories.items(1)[0])
