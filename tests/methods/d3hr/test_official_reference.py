"""D3HR as released: numbers recorded by running lin-zhao-resoLve/D3HR @ 8ba351d on seeded tiny models.

How data/official_reference.json was recorded (script kept out of the repository, as the fetched code):
`helpers.tiny_dit()` / `helpers.tiny_vae()` built the models and saved them (float16) as data/dit and
data/vae; the release's own functions `invert` and `sample` (generation/dit_inversion_save_statistic.py)
and `select_algorithm_batch` / `evaluate_distribution_batch` (generation/group_sampling.py) were imported
unmodified, with a stub for `ipdb` (imported, never called, not installed) and a float32 `DiTPipeline` of
the tiny models on the CPU. The lines of the two `main()`s (which need CUDA and ImageNet files) were
replicated in the script: ImageNetDataset's transform at 32 px instead of 256, `0.18215 *
vae.encode(x * 2 - 1).latent_dist.sample()` per image after `torch.manual_seed(100 + k)`, statistics
over the flattened inverted latents, row 6, 4 batches of 50 candidate groups of 3 seeded `i * 12345`,
and `sample(..., start_step=18, num_inference_steps=50)` on each chosen latent without the float16 cast
(the tiny model is float32). Every candidate's score was recorded by drawing the batch again.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from ddbench.generators.dit.codecs import SDVAECodec
from ddbench.generators.dit.loading import load_dit
from ddbench.methods.d3hr import ddim
from ddbench.methods.d3hr.groups import choose_group, class_statistics, draw_groups, group_scores
from ddbench.methods.d3hr.method import encode, prepare_image
from tests.methods.d3hr import helpers as H

diffusers = pytest.importorskip("diffusers")
REFERENCE = json.loads((H.DATA / "official_reference.json").read_text())


def expected(key: str) -> torch.Tensor:
    return torch.tensor(REFERENCE[key], dtype=torch.float64)


def close(actual: torch.Tensor, key: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    torch.testing.assert_close(actual.double(), expected(key), atol=atol, rtol=rtol)


@pytest.fixture(scope="module")
def models():
    model = load_dit(H.DATA / "dit").use_variant("diffusers")
    vae = diffusers.AutoencoderKL.from_pretrained(H.DATA / "vae").float()
    return model, SDVAECodec(vae)


def labels(count: int) -> torch.Tensor:
    return torch.full((count,), H.LABEL, dtype=torch.long)


def test_encoding_with_seeded_posterior_samples(models):
    _, codec = models
    pixels = torch.stack([prepare_image(Image.fromarray(a), H.IMAGE_SIDE) for a in H.class_images()])
    assert ((pixels + 1) / 2).double().sum().item() == pytest.approx(REFERENCE["pixels_sum"], abs=1e-3)
    latents = encode(codec, pixels, [torch.Generator().manual_seed(s) for s in H.encode_seeds()])
    close(latents, "encoded", atol=1e-6)


def test_inversion_trajectory_at_the_kept_rows(models):
    model, _ = models
    rows = ddim.invert(model, expected("encoded").float(), labels(H.IMAGES))
    assert rows.shape == (15, H.IMAGES, 4, 4, 4) and ddim.kept_timesteps()[6] == 600
    close(rows, "inverted")


def test_inversion_stops_at_the_statistics_row_with_the_same_numbers(models):
    """The method inverts only up to the row its statistics read (row 6: t = 600, 30 guided steps,
    not the release's 38); those rows are the release's numbers."""
    model, _ = models
    calls = []
    hook = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        rows = ddim.invert(model, expected("encoded").float(), labels(H.IMAGES), last_row=6)
    finally:
        hook.remove()
    assert rows.shape == (7, H.IMAGES, 4, 4, 4) and len(calls) == 30
    torch.testing.assert_close(rows.double(), expected("inverted")[:7], atol=1e-5, rtol=1e-4)


def test_class_statistics():
    trajectories = expected("inverted").float().permute(1, 0, 2, 3, 4).flatten(2)
    mean, variance = class_statistics(trajectories)
    close(mean, "mean", atol=1e-6)
    close(variance, "variance", atol=1e-6)


def test_group_scores_and_the_chosen_group():
    mean, std = expected("mean")[6].float(), expected("variance")[6].float().sqrt()
    batches, trials = H.group_batches()
    drawn = []
    for i, record in enumerate(REFERENCE["group_batches"]):
        groups = draw_groups(mean, std, trials, H.IPC, torch.Generator().manual_seed(record["seed"]))
        scores = group_scores(groups, mean, std)
        torch.testing.assert_close(scores.double(), torch.tensor(record["scores"], dtype=torch.float64), atol=1e-6, rtol=1e-6)
        assert int(scores.argmin()) == record["best_index"]
        drawn.append(groups)
    assert len(drawn) == batches
    chosen, score, index = choose_group(drawn, mean, std)
    close(chosen, "chosen", atol=1e-6)
    assert score == pytest.approx(REFERENCE["chosen_score"], abs=1e-6)
    winner = min(range(batches), key=lambda b: REFERENCE["group_batches"][b]["best_score"])
    assert index == winner * trials + REFERENCE["group_batches"][winner]["best_index"]


def test_generation_from_the_chosen_latents(models):
    model, codec = models
    chosen = expected("chosen").float().view(H.IPC, 4, 4, 4)
    final = ddim.generate(model, chosen, labels(H.IPC), start_step=18)
    close(final, "generated_latents")
    with torch.no_grad():
        images = (codec.decode(final) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    close(images, "generated_images", atol=1e-5)


def test_the_official_dit_variant_is_another_function(models):
    model, _ = models
    model.use_variant("official")
    try:
        rows = ddim.invert(model, expected("encoded").float(), labels(H.IMAGES))
    finally:
        model.use_variant("diffusers")
    assert (rows.double() - expected("inverted")).abs().max() > 1e-3


def test_the_stages_chained_from_the_images_reach_the_same_group_and_latents(models):
    """Each stage fed by ours, not by the recorded input (measured: inversion 1.4e-6, group scores 6e-8,
    final latents 2e-5 from the release's)."""
    model, codec = models
    pixels = torch.stack([prepare_image(Image.fromarray(a), H.IMAGE_SIDE) for a in H.class_images()])
    latents = encode(codec, pixels, [torch.Generator().manual_seed(s) for s in H.encode_seeds()])
    mean, variance = class_statistics(ddim.invert(model, latents, labels(H.IMAGES)).permute(1, 0, 2, 3, 4).flatten(2))
    mu, sigma = mean[6], variance[6].sqrt()
    _, trials = H.group_batches()
    batches = [draw_groups(mu, sigma, trials, H.IPC, torch.Generator().manual_seed(b["seed"])) for b in REFERENCE["group_batches"]]
    chosen, score, index = choose_group(batches, mu, sigma)
    winner = min(range(len(batches)), key=lambda b: REFERENCE["group_batches"][b]["best_score"])
    assert index == winner * trials + REFERENCE["group_batches"][winner]["best_index"]
    assert score == pytest.approx(REFERENCE["chosen_score"], abs=1e-5)
    close(ddim.generate(model, chosen.view(H.IPC, 4, 4, 4), labels(H.IPC)), "generated_latents", atol=1e-4)
