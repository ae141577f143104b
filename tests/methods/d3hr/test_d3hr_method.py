"""`d3hr` as a method: config checks, the group choice's ties, the quirk switches, per-image seeds (the
batch size changes no image), and one fast `ddbench run` on digits with the shipped DiT."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from ddbench.core.errors import ConfigError
from ddbench.core.pipeline import build_plugin, distill
from ddbench.core.progress import NullProgress
from ddbench.methods.d3hr import D3HR, ddim
from ddbench.methods.d3hr.groups import batch_sizes, choose_group, group_scores, skewness
from tests.evaluators.synthetic import ColourSquares
from tests.methods.minimax.test_dit_methods import checkpoint  # noqa: F401 (a tiny 4-class pixel-space DiT)
from tests.methods.minimax.test_dit_methods import TINY, tiny_model


def images_of(overrides, out, ipc=2):
    dataset = ColourSquares()
    method = build_plugin(D3HR, dataset, overrides)
    distill(method, dataset, ipc, 0, out, torch.device("cpu"), None, NullProgress())
    return [Image.open(p).tobytes() for p in sorted((out / "images").rglob("*.png"))], method


def base(path) -> dict[str, str]:
    return {"dit_ckpt": str(path), "num_heads": "2", "vae": "pixels", "images_per_class": "5", "groups": "40",
            "groups_per_batch": "16"}


def test_ties_go_to_the_first_candidate_within_and_across_batches():
    mean, std = torch.zeros(6), torch.ones(6)
    group = torch.randn(1, 3, 6, generator=torch.Generator().manual_seed(0))
    worse = group * 3
    first = torch.cat([worse, group, group])  # best at index 1, tied with 2
    _, score, index = choose_group([first, torch.cat([group, worse])], mean, std)
    assert index == 1 and score == pytest.approx(group_scores(group, mean, std).item())


def test_a_degenerate_candidate_cannot_hide_the_rest_of_its_batch():
    """Found by the full-size dry run: a class std of ~3e-5 on latents of ~5 made two members of one
    candidate equal in a dimension (float32), its skewness 0/0, and torch.min of the batch NaN."""
    mean, std = torch.zeros(6), torch.ones(6)
    good = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(0))
    degenerate = good[:1].clone()
    degenerate[0, 1, 2] = degenerate[0, 0, 2] = degenerate[0, 2, 2] = 0.5  # zero std in dimension 2
    assert torch.isnan(group_scores(degenerate, mean, std)).all()
    chosen, score, index = choose_group([torch.cat([degenerate, good])], mean, std)
    expected = group_scores(good, mean, std)
    assert index == 1 + int(expected.argmin()) and score == pytest.approx(expected.min().item())
    with pytest.raises(ValueError, match="no candidate group has a finite score"):
        choose_group([degenerate], mean, std)


def test_score_terms_and_the_upstream_skewness():
    groups = torch.randn(5, 4, 7, generator=torch.Generator().manual_seed(1))
    mean, std = torch.randn(7, generator=torch.Generator().manual_seed(2)), torch.rand(7) + 0.5
    assert skewness(groups).shape == (5, 4) and skewness(groups, "per_dimension").shape == (5, 7)
    z = (groups - groups.mean(1, keepdim=True)) / groups.std(1, keepdim=True)
    per_member = z.pow(3).sum(2) * 7 / (6 * 5)  # n = D = 7, the number of dimensions (upstream)
    expected = ((groups.mean(1) - mean).norm(dim=1) + (groups.std(1) - std).norm(dim=1) + 0.1 * per_member.norm(dim=1))
    torch.testing.assert_close(group_scores(groups, mean, std), expected)
    assert batch_sizes(40, 16) == [16, 16, 8]


def test_the_last_step_quirk_and_the_start_step():
    model = tiny_model(TINY, seed=5).use_variant("diffusers")
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1])
    quirk = ddim.generate(model, x, labels, start_step=47)
    fixed = ddim.generate(model, x, labels, start_step=47, last_to_abar1=False)
    assert ddim.leading_timesteps()[47:] == [40, 20, 0]
    assert (quirk - fixed).abs().max() > 1e-4
    assert ddim.leading_timesteps()[18] == 620 and ddim.leading_timesteps()[19] == ddim.kept_timesteps()[6] == 600


def test_config_checks(tmp_path, checkpoint):  # noqa: F811
    for key, value, message in [("steps", "30", "steps must be 50"), ("dit_variant", "sd3", "dit_variant"),
                                ("skewness", "kurtosis", "skewness"), ("stats_row", "15", "stats_row"),
                                ("images_per_class", "1", "images_per_class")]:
        with pytest.raises(ConfigError, match=message):
            images_of({**base(checkpoint), key: value}, tmp_path / key)
    with pytest.raises(ConfigError, match="ipc >= 2"):
        images_of(base(checkpoint), tmp_path / "ipc1", ipc=1)


def test_batch_size_changes_no_image_and_the_switches_change_them(tmp_path, checkpoint):  # noqa: F811
    one, method = images_of({**base(checkpoint), "batch_size": "1"}, tmp_path / "one")
    three, _ = images_of({**base(checkpoint), "batch_size": "3"}, tmp_path / "three")
    assert len(one) == 8 and len(set(one)) == 8
    differing = [sum(a != b for a, b in zip(x, y)) for x, y in zip(one, three)]
    assert max(differing) <= 2  # identical up to a rare last-bit rounding of a batched matmul
    assert method.model.variant == "diffusers"
    for key, value in [("dit_variant", "official"), ("invert_at_target", "false"), ("start_step", "19"),
                       ("groups_per_batch", "20")]:
        other, _ = images_of({**base(checkpoint), key: value}, tmp_path / key)
        assert other != one, key


def test_run_on_digits_with_the_shipped_dit(cli, tmp_path):
    result = cli("run", "--method", "d3hr", "--dataset", "digits", "--ipc", "2", "--set", "images_per_class=4",
                 "--set", "groups=64", "--set", "groups_per_batch=32", "--evaluator", "hard_label", "--set", "epochs=1",
                 "--device", "cpu", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["extra"]["generator"] == "dit"
    assert manifest["extra"]["dit_variant"] == "diffusers"
    assert manifest["extra"]["group_sampling"]["groups_per_class"] == 64
    assert manifest["extra"]["group_sampling"]["batches"] == 2
    assert manifest["config"]["groups"] == 64 and manifest["identity"]["method"] == "d3hr"
    images = sorted((tmp_path / "run" / "images").rglob("*.png"))
    assert len(images) == 20 and Image.open(images[0]).size == (16, 16)
