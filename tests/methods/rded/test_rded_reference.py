"""RDED's selection against numbers recorded from the official code (tests/methods/data/rded_official.json,
see its "about"): the crop resize, the padded cross-entropy scores, the chosen patches in rank order
and the stitched images, on hand-built tiny cases (factor 2 with ipc 2, factor 1, and a 9 px
resolution whose 2x2 grid has uneven cells)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ddbench.methods.rded.selection import crop_losses, resized_crops, select_patches, stitch
from ddbench.training.augment import normalize

RECORD = json.loads((Path(__file__).parents[1] / "data" / "rded_official.json").read_text())
CASES = {case["name"]: case for case in RECORD["cases"]}
MEAN, STD = tuple(RECORD["mean"]), tuple(RECORD["std"])


def official_teacher() -> nn.Module:
    teacher = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))
    teacher.load_state_dict({k: torch.tensor(v) for k, v in RECORD["teacher"]["state_dict"].items()})
    return teacher.eval()


def our_crops(case) -> torch.Tensor:
    """(images, num_crop, 3, s, s) unnormalised crops at the recorded boxes."""
    size = case["resolution"] // case["factor"]
    crops = []
    for pixels, boxes in zip(case["images_uint8_hwc"], case["boxes_top_left_height_width"]):
        image = torch.tensor(pixels, dtype=torch.uint8).permute(2, 0, 1).float().div(255)
        crops.append(resized_crops(image, [tuple(box) for box in boxes], size))
    return torch.stack(crops)


@pytest.mark.parametrize("name", sorted(CASES))
def test_crops_scores_selection_and_stitching_match_the_official_code(name):
    case = CASES[name]
    crops = our_crops(case)
    normalized = normalize(crops.flatten(0, 1), MEAN, STD).reshape(crops.shape)
    torch.testing.assert_close(normalized, torch.tensor(case["crops_normalized"], dtype=torch.float32), rtol=0, atol=2e-5)

    losses = crop_losses(official_teacher(), crops, case["label"], case["resolution"], MEAN, STD)
    torch.testing.assert_close(losses, torch.tensor(case["losses_image_by_crop"]), rtol=1e-5, atol=1e-6)

    count = case["ipc"] * case["factor"] ** 2
    chosen = select_patches(losses, count)
    official = case["chosen_image_crop_in_rank_order"]
    assert [image for image, _ in chosen] == [image for image, _ in official]
    for (image, crop), (_, official_crop) in zip(chosen, official):  # identical crops of one image are one patch
        assert torch.equal(crops[image, crop], crops[image, official_crop])

    patches = torch.stack([crops[image, crop] for image, crop in chosen])
    stitched = stitch(patches, case["resolution"], case["factor"], case["ipc"])
    torch.testing.assert_close(stitched, torch.tensor(case["stitched_float"], dtype=torch.float32), rtol=0, atol=2e-5)
    # the release truncates x * 255 after a float round trip; we round: never more than one level apart
    ours = stitched.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy().astype(int)
    theirs = np.array(case["saved_uint8_hwc_official"], dtype=int)
    assert np.abs(ours - theirs).max() <= 1 and (ours - theirs).min() >= 0


def test_the_cases_cover_the_stitching_layouts():
    assert {(c["factor"], c["ipc"], c["resolution"] % c["factor"]) for c in RECORD["cases"]} == {(2, 2, 0), (1, 2, 0), (2, 1, 1)}
