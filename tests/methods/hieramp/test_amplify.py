"""Saliency, top-k and the two amplification modes on hand-built attention logits."""

from __future__ import annotations

import math

import pytest
import torch

from ddbench.core.errors import ConfigError
from ddbench.methods.hieramp.amplify import (AmplificationPlan, amplify_logits, class_token_saliency, per_scale,
                                             scales_of_stages, stage_of_scale, top_k_count, top_rho_indicator)


def hand_built_logits() -> torch.Tensor:
    """(B=1, H=2, Lq=5, Lk=7): 2 earlier keys, 4 current image keys, the class key; class row last."""
    logits = torch.zeros(1, 2, 5, 7)
    logits[0, 0, -1, 2:6] = torch.tensor([0.0, math.log(3), 0.0, math.log(4)])  # head 0: weights 1,3,1,4 /9
    logits[0, 1, -1, 2:6] = torch.tensor([math.log(2), 0.0, 0.0, 0.0])  # head 1: weights 2,1,1,1 /5
    logits[0, :, -1, :2] = 50.0  # earlier keys (masked for the class token in practice) must not count
    return logits


def test_saliency_is_the_head_average_of_the_class_rows_softmax_over_current_image_keys():
    saliency = class_token_saliency(hand_built_logits(), num_earlier=2, length=4)
    head0 = torch.tensor([1, 3, 1, 4]) / 9
    head1 = torch.tensor([2, 1, 1, 1]) / 5
    assert torch.allclose(saliency, ((head0 + head1) / 2)[None])


def test_top_rho_picks_the_most_salient_keys():
    saliency = class_token_saliency(hand_built_logits(), num_earlier=2, length=4)  # [.256, .267, .156, .322]
    assert top_rho_indicator(saliency, 0.5).tolist() == [[False, True, False, True]]
    assert top_rho_indicator(saliency, 0.25).tolist() == [[False, False, False, True]]
    assert top_rho_indicator(saliency, 0.0).sum() == 1  # k = max(1, ...)


def test_k_is_max_one_round_rho_n():
    assert [top_k_count(0.5, n) for n in (1, 4, 9, 25, 256)] == [1, 2, 4, 12, 128]
    assert top_k_count(0.3, 10) == 3 and top_k_count(1.0, 7) == 7


def test_logit_bias_adds_beta_on_selected_columns_for_every_query_row():
    logits = hand_built_logits()
    indicator = torch.tensor([[True, False, False, True]])
    out = amplify_logits(logits, indicator, num_earlier=2, beta=5.0)
    delta = out - logits
    assert torch.equal(delta[..., [2, 5]], torch.full((1, 2, 5, 2), 5.0))
    assert delta[..., [0, 1, 3, 4, 6]].abs().sum() == 0


def test_post_softmax_multiplies_selected_weights_and_renormalises():
    logits = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    indicator = torch.tensor([[True, False, False, True], [False, True, False, False]])
    weights = logits.softmax(-1)
    factor = torch.ones(2, 1, 1, 7)
    factor[:, 0, 0, 2:6] = torch.where(indicator, 5.0, 1.0)
    expected = weights * factor / (weights * factor).sum(-1, keepdim=True)
    out = amplify_logits(logits, indicator, num_earlier=2, beta=5.0, mode="post_softmax").softmax(-1)
    assert torch.allclose(out, expected, atol=1e-6)
    same = amplify_logits(logits, indicator, num_earlier=2, beta=1.0, mode="post_softmax")
    assert torch.equal(same, logits)


def test_stages_split_the_released_pyramid_1_3_4_6_7_9():
    assert [stage_of_scale(s, 10) for s in range(10)] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert scales_of_stages("full", 10) == list(range(1, 10))
    assert scales_of_stages("coarse+fine", 10) == [1, 2, 3, 7, 8, 9]
    assert scales_of_stages("mid", 6) == [3, 4]
    assert per_scale((0.1, 5, 5), 10, "beta") == [0.1, 0.1, 0.1, 0.1, 5, 5, 5, 5, 5, 5]


def test_plan_defaults_and_errors():
    plan = AmplificationPlan.resolve(num_scales=10, depth=16, beta=(5.0,), rho=(0.5,), blocks=(-2,))
    assert plan.blocks == (14,) and plan.scales == frozenset(range(1, 10)) and not plan.amplifies(0)
    with pytest.raises(ConfigError):
        AmplificationPlan.resolve(num_scales=10, depth=16, beta=(5.0, 1.0), rho=(0.5,), blocks=(-2,))
    with pytest.raises(ConfigError):
        AmplificationPlan.resolve(num_scales=10, depth=16, beta=(5.0,), rho=(0.5,), blocks=(16,))
    with pytest.raises(ConfigError):
        AmplificationPlan.resolve(num_scales=10, depth=16, beta=(0.0,), rho=(0.5,), blocks=(-2,), mode="post_softmax")
