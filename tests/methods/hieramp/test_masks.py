"""Who may attend to whom with per-scale class tokens, in training and in cached sampling."""

from __future__ import annotations

import torch

from ddbench.methods.hieramp.masks import (allowed_keys, class_token_positions, image_token_positions,
                                           sampling_step_bias)


def test_each_position_sees_exactly_its_allowed_keys():
    # pyramid (1, 2): positions r0 | c0 | r1a r1b r1c r1d | c1
    allowed = allowed_keys((1, 2)).int().tolist()
    assert allowed == [
        # r0 c0 r1a r1b r1c r1d c1
        [1, 1, 0, 0, 0, 0, 0],  # r0: itself and its class token
        [1, 1, 0, 0, 0, 0, 0],  # c0: only scale 0 (its image token and itself)
        [1, 0, 1, 1, 1, 1, 1],  # r1*: earlier image tokens, its own scale, its own class token (not c0)
        [1, 0, 1, 1, 1, 1, 1],
        [1, 0, 1, 1, 1, 1, 1],
        [1, 0, 1, 1, 1, 1, 1],
        [0, 0, 1, 1, 1, 1, 1],  # c1: only scale 1, never earlier scales
    ]


def test_positions_of_class_and_image_tokens():
    assert class_token_positions((1, 2, 3)).tolist() == [1, 6, 16]
    assert image_token_positions((1, 2)).tolist() == [0, 2, 3, 4, 5]


def test_sampling_step_mask_matches_the_training_mask_rows():
    patch_nums = (1, 2, 3)
    training = allowed_keys(patch_nums)
    images = image_token_positions(patch_nums)
    classes = class_token_positions(patch_nums)
    for scale_index, side in enumerate(patch_nums):
        start = sum(p * p for p in patch_nums[:scale_index])
        queries = torch.cat((images[start:start + side * side], classes[scale_index:scale_index + 1]))
        keys = torch.cat((images[:start + side * side], classes[scale_index:scale_index + 1]))  # cache holds no class keys
        expected = training[queries][:, keys]
        assert torch.equal(sampling_step_bias(patch_nums, scale_index)[0, 0] == 0, expected)
