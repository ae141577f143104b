"""`dit`, `minimax` and `hieramp-dit` on a tiny random DiT: per-image seeds (batch size never changes an
image), hieramp-dit with alpha 0 is exactly dit, its object region is the top share of the guidance
difference in token order, ImageNet subsets sample the release with ImageNet-1K labels, and the run
identity names the weights."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from ddbench.core.errors import CheckpointError, ConfigError
from ddbench.core.pipeline import build_plugin, distill
from ddbench.core.progress import NullProgress
from ddbench.generators.dit.config import DiTConfig
from ddbench.methods.hieramp.dit import HierAmpDiT, ObjectRegionAmplifier, token_saliency, top_share_mask
from ddbench.methods.minimax import Minimax, PlainDiT
from tests.evaluators.synthetic import ColourSquares
from tests.generators.dit.helpers import tiny_model

TINY = DiTConfig(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=3, num_heads=2, num_classes=4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("dit") / "tiny.pt"
    model = tiny_model(TINY, seed=5)
    with torch.no_grad():
        model.final_layer.linear.weight.mul_(0.05)  # keep the random model's samples in range
    torch.save({key: value for key, value in model.state_dict().items() if "gamma" not in key}, path)
    return path


def images_of(method_cls, overrides, out, ipc=3):
    dataset = ColourSquares()
    method = build_plugin(method_cls, dataset, overrides)
    distill(method, dataset, ipc, 0, out, torch.device("cpu"), None, NullProgress())
    return [Image.open(p).tobytes() for p in sorted((out / "images").rglob("*.png"))], method


def base(checkpoint) -> dict[str, str]:
    return {"dit_ckpt": str(checkpoint), "num_heads": "2", "vae": "pixels", "steps": "6"}


def test_batch_size_never_changes_which_image_a_seed_gives(tmp_path, checkpoint):
    one, _ = images_of(PlainDiT, {**base(checkpoint), "batch_size": "1"}, tmp_path / "one")
    three, method = images_of(PlainDiT, {**base(checkpoint), "batch_size": "3"}, tmp_path / "three")
    assert len(one) == 12 and len(set(one)) == 12  # 4 classes x 3 images, all different
    differing = [sum(a != b for a, b in zip(x, y)) for x, y in zip(one, three)]
    assert max(differing) <= 2  # identical up to a rare last-bit rounding of a batched matmul
    assert method.class_map.labels == (0, 1, 2, 3) and method.class_map.label_space == "dataset"


def test_a_given_checkpoint_records_its_class_map_in_the_manifest(tmp_path, checkpoint):
    from ddbench.core.distilled import read_manifest

    images_of(PlainDiT, base(checkpoint), tmp_path / "given", ipc=1)
    classes = read_manifest(tmp_path / "given")["extra"]["generator_classes"]
    assert classes["label_space"] == "dataset"
    assert classes["classes"] == {name: index for index, name in enumerate(ColourSquares().class_names)}


def test_hieramp_dit_with_alpha_zero_is_exactly_dit(tmp_path, checkpoint):
    plain, _ = images_of(PlainDiT, base(checkpoint), tmp_path / "dit")
    zero, _ = images_of(HierAmpDiT, {**base(checkpoint), "alpha": "0"}, tmp_path / "zero")
    amplified, _ = images_of(HierAmpDiT, {**base(checkpoint), "alpha": "2"}, tmp_path / "amp")
    assert zero == plain
    assert amplified != plain


def test_object_region_is_the_top_share_of_the_guidance_difference_in_token_order():
    difference = torch.zeros(1, 3, 8, 8)
    difference[0, :, 5, 2] = 1.0  # latent pixel (row 5, col 2) -> token (2, 1) of a 4x4 grid -> index 9
    difference[0, 0, 0, 7] = 0.5  # token (0, 3) -> index 3
    saliency = token_saliency(difference, patch_size=2)
    assert saliency.shape == (1, 16)
    assert saliency[0].argmax().item() == 9 and saliency[0, 3] > 0 and saliency[0].count_nonzero() == 2
    mask = top_share_mask(saliency, rho=0.125)
    assert mask[0].nonzero().flatten().tolist() == [3, 9]
    amplifier = ObjectRegionAmplifier(alpha=1.5, rho=0.125, blocks=(1,), patch_size=2, channels=3)
    assert amplifier.attention_scales(0) is None  # the first step has no evidence yet
    amplifier.observe(0, torch.cat([difference, torch.zeros(1, 3, 8, 8)], 1), torch.zeros(1, 6, 8, 8))
    scales = amplifier.attention_scales(1)[1]
    assert scales.shape == (1, 16, 1) and scales[0, 9, 0] == 2.5 and scales[0, 0, 0] == 1.0


def test_hieramp_dit_checks_its_knobs(tmp_path, checkpoint):
    with pytest.raises(ConfigError, match="amp_blocks"):
        images_of(HierAmpDiT, {**base(checkpoint), "amp_blocks": "7"}, tmp_path / "bad")
    with pytest.raises(ConfigError, match="rho"):
        images_of(HierAmpDiT, {**base(checkpoint), "rho": "0"}, tmp_path / "bad2")


def test_imagenet_subsets_sample_the_release_with_imagenet_labels(monkeypatch):
    from ddbench.core.interfaces import DistillTask
    from ddbench.datasets.imagenet import ImageWoof
    from ddbench.generators import weights

    woof = ImageWoof()
    method = build_plugin(PlainDiT, woof, {})
    extra = method.manifest_extra(DistillTask(woof, 1, 0, torch.device("cpu"), writer=None))
    classes = extra["generator_classes"]
    assert classes["label_space"] == "imagenet1k"
    assert list(classes["classes"].values()) == list(woof.imagenet1k_indices)
    monkeypatch.setattr(weights, "known_sha256", lambda entry: None)  # nothing cached, nothing published
    vae_sha = next(f.sha256 for f in weights.get_entry("sd_vae_ft_mse").files if f.filename.endswith(".safetensors"))
    assert method.weights_identity(woof) == {"generator": "unpublished:dit_xl_2_256", "vae": vae_sha}
    with pytest.raises(CheckpointError, match="ddbench minimax finetune"):
        build_plugin(Minimax, woof, {}).weights_identity(woof)


def test_weights_identity_of_given_and_missing_weights(checkpoint):
    from ddbench.core.hashing import sha256_file

    method = build_plugin(PlainDiT, ColourSquares(), base(checkpoint))
    assert method.weights_identity(ColourSquares()) == {"generator": sha256_file(checkpoint)}
    with pytest.raises(CheckpointError, match="dit_ckpt"):
        build_plugin(PlainDiT, ColourSquares(), {}).weights_identity(ColourSquares())


def test_a_generator_with_other_classes_is_refused(tmp_path, checkpoint):
    from dataclasses import replace

    path = tmp_path / "three.pt"
    model = tiny_model(replace(TINY, num_classes=3), seed=6)
    torch.save({k: v for k, v in model.state_dict().items() if "gamma" not in k}, path)
    with pytest.raises(CheckpointError, match="3 classes"):
        images_of(PlainDiT, {**base(checkpoint), "dit_ckpt": str(path)}, tmp_path / "out")
