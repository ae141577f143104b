"""The `fast_cpu` sampling kernels give what the plain PyTorch kernels give: the same tokens, images
equal to float rounding, for plain VAR and for HIERAMP's class tokens with amplification."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ddbench.core.seeding import torch_generator
from ddbench.generators.var.cpu_kernels import Linear, PackedLinears, onednn_linear_available, subpixel_upsample_conv
from ddbench.generators.var.sampling import SamplingOptions, ScaleSampler
from ddbench.methods.hieramp.amplify import AmplificationPlan
from ddbench.methods.hieramp.sampler import ClassTokenSampler
from tests.generators.test_var_reference import reference_models
from tests.methods.hieramp.helpers import tiny_class_token

needs_onednn = pytest.mark.skipif(not onednn_linear_available(), reason="this torch build has no oneDNN linear")
LABELS = torch.tensor([0, 3, 4, 3])


def generators(count: int) -> list[torch.Generator]:
    return [torch_generator(0, "test-fast-cpu", i) for i in range(count)]


def both_paths(make_sampler) -> dict[bool, tuple[list[torch.Tensor], torch.Tensor]]:
    """fast_cpu -> (per-scale tokens, images) for LABELS, one generator per image."""
    out = {}
    for fast in (False, True):
        sampler = make_sampler(SamplingOptions(cfg=2.0, top_k=20, top_p=0.9, fast_cpu=fast))
        assert sampler.uses_fast_cpu(torch.device("cpu")) == (fast and onednn_linear_available())
        out[fast] = (sampler.sample_indices(LABELS, generators(len(LABELS))), sampler.sample(LABELS, generators(len(LABELS))))
    return out


def assert_same_samples(paths) -> None:
    (plain_tokens, plain_images), (fast_tokens, fast_images) = paths[False], paths[True]
    assert all(torch.equal(a, b) for a, b in zip(plain_tokens, fast_tokens))
    assert plain_images.shape == fast_images.shape and fast_images.is_contiguous()
    torch.testing.assert_close(fast_images, plain_images, atol=1e-5, rtol=0)


@needs_onednn
def test_plain_var_samples_agree():
    vqvae, transformer = reference_models()  # the official-reference models: ch_mult (1,1,2,2,4), 4 upsamplings
    assert_same_samples(both_paths(lambda options: ScaleSampler(transformer, vqvae, options)))


@needs_onednn
def test_hieramp_samples_agree():
    model, vqvae = tiny_class_token()
    plan = AmplificationPlan.resolve(num_scales=len(model.patch_nums), depth=len(model.blocks), beta=(5.0,),
                                     rho=(0.5,), blocks=(-2,))
    assert_same_samples(both_paths(lambda options: ClassTokenSampler(model, vqvae, options, plan=plan)))


@pytest.mark.parametrize("channels_last", [False, True])
def test_subpixel_upsample_conv_is_upsample_then_conv(channels_last):
    generator = torch.Generator().manual_seed(3)
    conv = torch.nn.Conv2d(6, 5, 3, padding=1)
    with torch.no_grad():
        for parameter in conv.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    x = torch.randn(2, 6, 5, 7, generator=generator)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        out = subpixel_upsample_conv(conv, x)
    assert out.shape == (2, 5, 10, 14)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@needs_onednn
def test_packed_linear_is_f_linear_and_follows_weight_changes():
    layer = Linear(16, 24)
    x = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(4))
    plain = F.linear(x, layer.weight, layer.bias)
    assert torch.equal(layer(x), plain)  # no cache installed: exactly F.linear
    cache = PackedLinears()
    with torch.no_grad(), cache.installed(layer):
        assert layer.packed is not None
        torch.testing.assert_close(layer(x), plain, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(layer.linear(x, layer.bias, gelu_tanh=True), F.gelu(plain, approximate="tanh"),
                                   atol=1e-6, rtol=1e-6)
        layer.weight.mul_(2)  # an in-place change: the next call must not use the stale packing
    with torch.no_grad(), cache.installed(layer):
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), atol=1e-6, rtol=1e-6)
    assert layer.packed is None
    assert layer(x).requires_grad  # training outside the cache still gets gradients
