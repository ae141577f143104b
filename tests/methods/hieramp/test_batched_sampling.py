"""Batched sampling with one generator per image: the batch size never changes which image a seed
gives, for the plain VAR, the class-token VAR and HIERAMP's amplification (shipped digits models)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from ddbench.core.pipeline import build_plugin, distill
from ddbench.core.progress import NullProgress
from ddbench.core.seeding import torch_generator
from ddbench.generators.var.sampling import SamplingOptions, ScaleSampler, sample_tokens
from ddbench.methods.hieramp import HierAmp
from ddbench.methods.hieramp.amplify import AmplificationPlan
from ddbench.methods.hieramp.sampler import ClassTokenSampler
from tests.evaluators.synthetic import ColourSquares
from tests.methods.hieramp.helpers import save_checkpoints, tiny_class_token

IMAGES = 10
OPTIONS = SamplingOptions(cfg=4.0, top_k=56, top_p=0.95)


def tokens_in_batches(sampler: ScaleSampler, batch_size: int, label: int = 3) -> list[torch.Tensor]:
    """Per-scale tokens (IMAGES, l) of images 0..9, sampled batch_size at a time."""
    rows: list[list[torch.Tensor]] = []
    for start in range(0, IMAGES, batch_size):
        chunk = range(start, min(IMAGES, start + batch_size))
        generators = [torch_generator(0, "hieramp-sample", label, i) for i in chunk]
        rows.append(sampler.sample_indices(torch.full((len(chunk),), label), generators))
    return [torch.cat([scales[si] for scales in rows]) for si in range(len(rows[0]))]


def assert_same_for_batch_sizes(sampler: ScaleSampler) -> None:
    one_at_a_time = tokens_in_batches(sampler, 1)
    for batch_size in (4, 10):
        batched = tokens_in_batches(sampler, batch_size)
        assert all(torch.equal(a, b) for a, b in zip(one_at_a_time, batched)), batch_size
    assert not torch.equal(one_at_a_time[-1][0], one_at_a_time[-1][1])  # images differ from each other


def test_plain_var_tokens_do_not_depend_on_the_batch_size():
    from ddbench.generators.var.shipped import load_digits_models

    assert_same_for_batch_sizes(ScaleSampler(*load_digits_models(), OPTIONS))


@pytest.mark.parametrize("amplify", [False, True], ids=["var-cls", "hieramp"])
def test_class_token_var_tokens_do_not_depend_on_the_batch_size(amplify):
    from ddbench.methods.hieramp.digits_weights import load_digits_class_token_models

    model, vqvae, _ = load_digits_class_token_models()
    plan = AmplificationPlan.resolve(num_scales=len(model.patch_nums), depth=len(model.blocks), beta=(5.0,),
                                     rho=(0.5,), blocks=(-2,)) if amplify else None
    assert_same_for_batch_sizes(ClassTokenSampler(model, vqvae, OPTIONS, plan=plan))


def test_each_row_draws_from_its_own_generator_only():
    logits = torch.randn(3, 5, 40, generator=torch.Generator().manual_seed(1))
    rows = sample_tokens(logits, 10, 0.9, [torch.Generator().manual_seed(s) for s in (7, 8, 9)])
    for row, seed in enumerate((7, 8, 9)):
        alone = sample_tokens(logits[row:row + 1], 10, 0.9, [torch.Generator().manual_seed(seed)])
        assert torch.equal(rows[row], alone[0])
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        sample_tokens(logits, 10, 0.9, [torch.Generator(), torch.Generator()])


def test_the_method_writes_the_same_images_for_any_batch_size(tmp_path):
    class ThreeColours(ColourSquares):
        num_colours = 3

    var_path, vqvae_path = save_checkpoints(tmp_path / "ckpt", *tiny_class_token(num_classes=3))
    dataset = ThreeColours()
    written = {}
    for batch_size in (1, 3):
        overrides = {"var_ckpt": str(var_path), "vqvae_ckpt": str(vqvae_path), "top_k": "20",
                     "batch_size": str(batch_size), "save_saliency": "true"}
        out = tmp_path / f"batch{batch_size}"
        distill(build_plugin(HierAmp, dataset, overrides), dataset, 4, 0, out, torch.device("cpu"), None,
                NullProgress())
        written[batch_size] = {p.relative_to(out): torch.tensor(list(Image.open(p).tobytes()), dtype=torch.int16)
                               for p in sorted(out.rglob("*.png"))}
    images = [p for p in written[1] if p.parts[0] == "images"]
    assert len(images) == 3 * 4 and len(written[1]) > 2 * len(images)  # + saliency maps and overlays
    assert written[1].keys() == written[3].keys()
    assert all(torch.equal(written[1][p], written[3][p]) for p in images)
    # saliency maps are floats rendered to 8 bits: batched matmuls round ~1e-8 apart, a pixel may tip over
    assert all((written[1][p] - written[3][p]).abs().max() <= 1 for p in written[1])


def test_the_fast_cpu_path_samples_a_batch_in_chunks_of_the_same_images(monkeypatch):
    from dataclasses import replace

    from ddbench.methods.hieramp.digits_weights import load_digits_class_token_models

    model, vqvae, _ = load_digits_class_token_models()
    plan = AmplificationPlan.resolve(num_scales=len(model.patch_nums), depth=len(model.blocks), beta=(5.0,),
                                     rho=(0.5,), blocks=(-2,))
    labels = torch.arange(IMAGES) % 10
    whole = ClassTokenSampler(model, vqvae, replace(OPTIONS, cpu_chunk=0), plan=plan)
    chunked = ClassTokenSampler(model, vqvae, OPTIONS, plan=plan)  # cpu_chunk 4: 4 + 4 + 2 images
    if not chunked.uses_fast_cpu(labels.device):
        pytest.skip("no fast_cpu path in this torch build")
    calls = []
    real = ClassTokenSampler._sample
    monkeypatch.setattr(ClassTokenSampler, "_sample", lambda self, *args: calls.append(len(args[0])) or real(self, *args))

    def generators() -> list[torch.Generator]:
        return [torch_generator(0, "hieramp-sample", int(label), i) for i, label in enumerate(labels)]

    expected = whole.sample(labels, generators())
    assert calls == [IMAGES]
    images = chunked.sample(labels, generators())
    assert calls[1:] == [4, 4, 2]
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)
    chunked.sample(labels, torch.Generator().manual_seed(0))  # one generator for the batch: drawn as one
    assert calls[4:] == [IMAGES]
