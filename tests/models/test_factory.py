"""The model factory: every arch builds, small inputs get the stride-1 stem, and a checkpoint
reloads into the same shape (the reason the adaptation is recorded in the model's spec)."""

from __future__ import annotations

import pytest
import torch

from ddbench.core.errors import CheckpointError, ConfigError
from ddbench.models import create_model, list_archs, load_model, save_model

ADAPTED_ARCHS = ["resnet18", "resnet101", "mobilenet_v2", "efficientnet_b0", "convnet3"]


def test_all_archs_listed():
    assert {"resnet18", "resnet101", "mobilenet_v2", "efficientnet_b0", "convnet3", "convnet6"} <= set(list_archs())


def test_small_input_resnet_has_3x3_stride1_stem_and_no_maxpool():
    small = create_model("resnet18", 10, 32)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, torch.nn.Identity)
    assert small.ddbench_spec.small_input and small.pretrained_cfg["ddbench"]["small_input"]
    large = create_model("resnet18", 10, 224)
    assert large.conv1.kernel_size == (7, 7) and not large.ddbench_spec.small_input


@pytest.mark.parametrize("arch", ["mobilenet_v2", "efficientnet_b0"])
def test_small_input_mobile_stem_is_stride1(arch):
    assert create_model(arch, 10, 16).conv_stem.stride == (1, 1)
    assert create_model(arch, 10, 224).conv_stem.stride == (2, 2)


@pytest.mark.parametrize("arch", ADAPTED_ARCHS)
def test_checkpoint_round_trip_keeps_adapted_shape(arch, tmp_path):
    torch.manual_seed(0)
    model = create_model(arch, 5, 8).eval()  # 8 px: the smallest input every adapted arch takes
    images = torch.randn(2, 3, 8, 8)
    expected = model(images)
    path = save_model(model, tmp_path / f"{arch}.pt", extra={"note": "x"})
    reloaded, extra = load_model(path)
    reloaded.eval()
    assert extra == {"note": "x"}
    assert reloaded.ddbench_spec == model.ddbench_spec
    torch.testing.assert_close(reloaded(images), expected)


def test_unknown_arch_suggests_the_close_name():
    with pytest.raises(ConfigError, match="resnet18"):
        create_model("resnet-18", 10, 32)


def test_convnet_too_deep_for_input_is_a_config_error():
    with pytest.raises(ConfigError, match="divisible"):
        create_model("convnet6", 10, 32)


def test_offline_without_cached_weights_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "empty-hub"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):
        create_model("resnet18", 10, 224, pretrained=True)


def test_load_model_rejects_foreign_file(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"model": {}}, path)
    with pytest.raises(CheckpointError, match="not a ddbench model checkpoint"):
        load_model(path)


@pytest.mark.parametrize("arch", ["mobilenet_v2", "efficientnet_b0"])
def test_new_heads_start_with_small_logits(arch):
    """timm's default head init starts these archs at logit std ~4, which stalls training from scratch."""
    torch.manual_seed(0)
    model = create_model(arch, 10, 8)
    assert model.get_classifier().weight.std() < 0.02
    assert model(torch.randn(8, 3, 8, 8)).std() < 1.0


@pytest.mark.parametrize("arch", ADAPTED_ARCHS)
def test_torchvision_init_round_trips_and_is_recorded(arch, tmp_path):
    """RDED's students are torchvision's models; the spec says so, so a checkpoint reloads into
    the same layout (torchvision's MobileNet/EfficientNet name their tensors differently)."""
    torch.manual_seed(0)
    model = create_model(arch, 5, 8, init="torchvision").eval()
    assert model.ddbench_spec.init == "torchvision"
    images = torch.randn(2, 3, 8, 8)
    expected = model(images)
    assert expected.shape == (2, 5)
    reloaded, _ = load_model(save_model(model, tmp_path / f"{arch}.pt"))
    assert reloaded.ddbench_spec == model.ddbench_spec
    torch.testing.assert_close(reloaded.eval()(images), expected)


def test_torchvision_init_keeps_the_small_input_stems():
    resnet = create_model("resnet18", 10, 32, init="torchvision")
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1) and isinstance(resnet.maxpool, torch.nn.Identity)
    assert create_model("mobilenet_v2", 10, 32, init="torchvision").features[0][0].stride == (1, 1)
    assert create_model("efficientnet_b0", 10, 224, init="torchvision").features[0][0].stride == (2, 2)


def test_torchvision_head_is_the_first_rows_of_a_1000_way_head():
    """EfficientNet-B0's head init depends on its width: U(+-1/sqrt(1000)) as RDED cuts it, not 1/sqrt(10)."""
    head = create_model("efficientnet_b0", 10, 32, init="torchvision").classifier[-1]
    assert head.weight.shape == (10, 1280) and head.out_features == 10
    assert head.weight.abs().max() <= 1000**-0.5


def test_spec_without_init_is_a_timm_model_and_bad_init_is_an_error():
    from ddbench.models import ModelSpec

    old = ModelSpec.from_dict({"arch": "resnet18", "num_classes": 10, "input_size": 32, "small_input": True})
    assert old.init == "timm"
    with pytest.raises(CheckpointError, match="small_input"):
        ModelSpec.from_dict({"arch": "resnet18", "num_classes": 10, "input_size": 32})
    with pytest.raises(ConfigError, match="unknown model init"):
        create_model("resnet18", 10, 32, init="keras")
    with pytest.raises(ConfigError, match="from scratch"):
        create_model("resnet18", 10, 32, init="torchvision", pretrained=True)
