"""CaO2 against numbers recorded from the official code (hatchetProject/CaO2 @ 6381e50).

How `data/official_cao2.json` was recorded ("about" in the file says the same): `main()` of the
unmodified `sample_woof.py` and `sample_imagenet100.py` was run on CPU with `--nclass 2 --ipc 2
--image-size 64 --seed 0` (and `np.random.seed(0)`, since upstream leaves numpy unseeded) on the tiny
models of tiny.py (files in data/, made by the recording script with the seeds there). Patched, for
loading only: `DiT_models` (the tiny size), `AutoencoderKL.from_pretrained` (the tiny VAE),
`torchvision.models[arch]` (the tiny scorer), `nn.DataParallel` (identity), `Module.cuda` (no-op); a
check that the non-strict DiT load used every key. Values were read with `sys.settrace` from main()'s
locals: the candidates and the scorer's softmax at the selection line, the chosen indices, and per
refinement step the timestep, loss, gradient and latent. The fetched code is not in this repository.

Checked here with ddbench's own DiT, sampler and CaO2 code: the first class's candidates from the
replayed noise stream (manual_seed(42): the noise bank, then the start and step noise), the
per-candidate probabilities and chosen indices (woof: most confident first, the first class has one
correct candidate so the fill-with-wrong branch runs; ImageNet-100: least confident first), and all
100 refinement steps of every selected image.
"""

from __future__ import annotations

import json

import pytest
import torch

from ddbench.generators.dit.codecs import SDVAECodec
from ddbench.generators.dit.sampling import DiTSampler, SamplingOptions
from ddbench.methods.cao2.algorithm import (RefineOptions, refine_latents, refine_timesteps, scorer_input,
                                            select_candidates, softmax_scores)
from tests.methods.cao2 import tiny as T

REFERENCE = json.loads((T.DATA / "official_cao2.json").read_text())
SCRIPTS = {"sample_woof": {"factor": 4, "most_confident_first": True, "divisor": 4},
           "sample_imagenet100": {"factor": 2, "most_confident_first": False, "divisor": 8}}
IPC = 2


def close(actual: torch.Tensor, expected, atol: float, rtol: float = 1e-4) -> None:
    torch.testing.assert_close(actual.double(), torch.tensor(expected, dtype=torch.float64), atol=atol, rtol=rtol)


@pytest.fixture(scope="module")
def dit():
    return T.load_tiny_dit()


@pytest.fixture(scope="module")
def codec():
    return SDVAECodec(T.load_tiny_vae())


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_first_class_candidates_from_the_replayed_noise(script, dit):
    recorded = REFERENCE[script]
    count = SCRIPTS[script]["factor"] * IPC
    generator = torch.Generator().manual_seed(42)  # upstream's save_noise() reseeds the global generator
    torch.randn(1024, 4, 8, 8, generator=generator)  # the noise bank
    start = torch.randn(count, 4, 8, 8, generator=generator)
    assert start.double().sum().item() == pytest.approx(recorded["start_noise_sum"], abs=1e-9)
    steps = [torch.randn(2 * count, 4, 8, 8, generator=generator)[:count] for _ in range(50)]  # drawn for [x; x]
    label = recorded["classes"][0]["class_label"]
    sampler = DiTSampler(dit, SamplingOptions(steps=50, cfg=2.7))
    latents = sampler.sample_latents(torch.full((count,), label), [], noise_fn=lambda k: start if k == 0 else steps[k - 1])
    close(latents, recorded["classes"][0]["candidates"], atol=2e-5)


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_probabilities_and_chosen_indices(script, codec):
    scorer = T.load_tiny_scorer(script)
    branches = set()
    for recorded in REFERENCE[script]["classes"]:
        candidates = torch.tensor(recorded["candidates"], dtype=torch.float32)
        probabilities = softmax_scores(scorer, scorer_input(codec.decode(candidates), 224), batch_size=3)
        label = recorded["class_label"]
        close(probabilities[:, label], recorded["prob_at_label"], atol=1e-7)
        close(probabilities.max(1).values, recorded["prob_max"], atol=1e-7)
        close(probabilities.pow(2).sum(1), recorded["prob_row_sumsq"], atol=1e-7)
        assert probabilities.argmax(1).tolist() == recorded["argmax"]
        chosen = select_candidates(probabilities, label, IPC, SCRIPTS[script]["most_confident_first"])
        assert chosen == recorded["chosen"]
        correct = sum(p == label for p in recorded["argmax"])
        branches.add("fill" if correct < IPC else "correct only")
    assert branches == {"fill", "correct only"}  # both branches of the selection are covered


def test_confidence_order_and_fill_on_a_made_up_softmax():
    probabilities = torch.tensor([[0.6, 0.4], [0.2, 0.8], [0.9, 0.1], [0.7, 0.3], [0.45, 0.55]])
    assert select_candidates(probabilities, 0, 2, most_confident_first=True) == [2, 3]
    assert select_candidates(probabilities, 0, 2, most_confident_first=False) == [0, 3]
    assert select_candidates(probabilities, 1, 3, most_confident_first=True) == [1, 4, 2]  # 2 correct, then the surest wrong
    assert select_candidates(probabilities, 1, 3, most_confident_first=False) == [4, 1, 0]


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_refinement_steps(script, dit):
    choices = refine_timesteps(50, SCRIPTS[script]["divisor"])
    assert choices == (list(range(1, 12)) if script == "sample_woof" else list(range(1, 6)))
    for recorded in REFERENCE[script]["classes"]:
        for position, image in enumerate(recorded["refine"]):
            assert image["x0"] == recorded["candidates"][recorded["chosen"][position]]
            assert set(image["t"]) <= set(choices)
            seen = []
            refined = refine_latents(dit, DiTSampler(dit).diffusion, torch.tensor([image["x0"]]),
                                     torch.tensor([image["noise"]]), torch.tensor(image["t"])[:, None],
                                     torch.tensor([1000]), RefineOptions(),
                                     on_step=lambda k, loss, grad, latent: seen.append((loss, grad, latent)))
            losses = torch.cat([loss for loss, _, _ in seen])
            close(losses, image["loss"], atol=1e-5)
            close(torch.stack([grad[0, :, 3, 2:5] for _, grad, _ in seen]), image["grad_slice"], atol=1e-7, rtol=1e-3)
            close(torch.stack([grad.norm() for _, grad, _ in seen]), image["grad_norm"], atol=1e-6, rtol=1e-3)
            close(torch.stack([latent[0, :, 3, 2:5] for _, _, latent in seen]), image["latent_slice"], atol=2e-6)
            for step, latent in image["latent_at"].items():
                close(seen[int(step) - 1][2][0], latent, atol=2e-6)
            close(refined[0], image["final"], atol=2e-6)


def test_the_fixed_timestep_and_the_class_label_change_the_refinement(dit):
    image = REFERENCE["sample_woof"]["classes"][0]["refine"][0]
    args = (dit, DiTSampler(dit).diffusion, torch.tensor([image["x0"]]), torch.tensor([image["noise"]]),
            torch.tensor(image["t"][:5])[:, None])
    upstream = refine_latents(*args, torch.tensor([1000]), RefineOptions(steps=5))
    mapped = refine_latents(*args, torch.tensor([1000]), RefineOptions(steps=5, model_timestep="mapped"))
    labelled = refine_latents(*args, torch.tensor([193]), RefineOptions(steps=5, train_mode=False))
    close(upstream[0, :, 3, 2:5], image["latent_slice"][4], atol=2e-6)
    assert not torch.allclose(mapped, upstream) and not torch.allclose(labelled, upstream)


def test_the_scorer_input_is_torchvisions_resize_of_the_raw_output():
    """Upstream: `transforms.Resize((224, 224))` on the decoder output tensor (torchvision 0.17: bilinear,
    antialias on tensors); the tiny models only upsample, where antialias does nothing, so check a downsample."""
    from torchvision import transforms

    decoded = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 1.5  # beyond [-1, 1]: kept
    expected = transforms.Resize((224, 224), antialias=True)(decoded)
    torch.testing.assert_close(scorer_input(decoded, 224), expected, atol=1e-5, rtol=1e-5)
    assert scorer_input(decoded, 224).abs().max() > 1.5  # no clamping, no [0, 1] mapping
