"""Behaviour of the VQ-VAE quantiser, the transformer and the sampler on tiny random models."""

from __future__ import annotations

import torch

from ddbench.core.seeding import torch_generator
from ddbench.generators.var.attention import KVCache
from ddbench.generators.var.quantizer import SharedPhis
from ddbench.generators.var.sampling import SamplingOptions, ScaleSampler, filter_top_k_top_p, sample_images
from tests.generators.var_helpers import TINY_PATCH_NUMS, tiny_models


def _images(batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, 8, 8, generator=torch_generator(seed, "test-images")) * 2 - 1


def test_phi_sharing_follows_the_release_ticks():
    phis = SharedPhis(channels=4, ratio=0.5, count=4)
    chosen = [list(phis.qresi_ls).index(phis.for_scale(si, 10)) for si in range(10)]
    assert chosen == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


def test_indices_shapes_and_decoding_agree_with_the_training_pass():
    _, vqvae = tiny_models()
    images = _images()
    indices = vqvae.image_to_indices(images)
    assert [tuple(i.shape) for i in indices] == [(3, pn * pn) for pn in TINY_PATCH_NUMS]
    f_hat, _, training_indices = vqvae.quantize(vqvae.encode_features(images))
    assert all(torch.equal(a, b) for a, b in zip(indices, training_indices))
    torch.testing.assert_close(vqvae.quantize.indices_to_fhat(indices), f_hat, atol=1e-5, rtol=1e-5)
    decoded = vqvae.indices_to_image(indices)
    assert decoded.shape == images.shape and decoded.abs().max() <= 1


def test_teacher_forcing_input_is_fhat_downsampled_to_each_next_scale():
    transformer, vqvae = tiny_models()
    indices = vqvae.image_to_indices(_images())
    teacher = vqvae.quantize.teacher_forcing_input(indices)
    assert teacher.shape == (3, transformer.total_tokens - 1, 8)
    f_hat_first_two = vqvae.quantize.indices_to_fhat(indices[:2])
    expected_third_scale = vqvae.quantize.next_scale_input(f_hat_first_two, 2)
    torch.testing.assert_close(teacher[:, 4:13], expected_third_scale)


def test_block_causal_mask_sees_own_and_earlier_scales():
    transformer, _ = tiny_models()
    visible = transformer.attn_bias_for_masking[0, 0] == 0
    assert visible[0].tolist() == [True] + [False] * 29
    assert visible[1:5, :5].all() and not visible[1:5, 5:].any()
    assert visible[-1].all()


def _cached_scale_logits(transformer, labels, teacher):
    """Logits of every scale computed scale by scale with the KV cache."""
    cond = transformer.class_emb(labels)
    caches = transformer.new_kv_caches()
    tokens = transformer.first_scale_tokens(cond)
    outputs = []
    start = 0
    for scale_index, pn in enumerate(transformer.patch_nums):
        if scale_index:
            tokens = transformer.scale_tokens(scale_index, teacher[:, start - 1:start - 1 + pn * pn])
        outputs.append(transformer.logits(transformer.run_blocks(tokens, cond, kv_caches=caches), cond))
        start += pn * pn
    return torch.cat(outputs, dim=1)


@torch.no_grad()
def test_cached_and_uncached_logits_agree():
    transformer, vqvae = tiny_models()
    labels = torch.tensor([0, 2, 4])
    teacher = vqvae.quantize.teacher_forcing_input(vqvae.image_to_indices(_images()))
    full = transformer(labels, teacher)
    torch.testing.assert_close(_cached_scale_logits(transformer, labels, teacher), full, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_logits_fn_path_equals_sdpa_and_can_bias_keys():
    transformer, _ = tiny_models()
    attention = transformer.blocks[0].attn
    x = torch.randn(2, 5, 64, generator=torch_generator(0, "test-x"))
    mask = transformer.attn_bias_for_masking[:, :, :5, :5]
    seen = {}

    def identity(logits):
        seen["shape"] = tuple(logits.shape)
        return logits

    torch.testing.assert_close(attention(x, mask, logits_fn=identity), attention(x, mask), atol=1e-5, rtol=1e-5)
    assert seen["shape"] == (2, 2, 5, 5)
    biased = attention(x, mask, logits_fn=lambda logits: logits + torch.tensor([0, 0, 0, 0, 5.0]))
    assert not torch.allclose(biased[:, -1], attention(x, mask)[:, -1])


@torch.no_grad()
def test_uncached_extra_tokens_do_not_enter_the_kv_cache():
    transformer, _ = tiny_models()
    attention = transformer.blocks[0].attn
    cache = KVCache()
    attention(torch.randn(2, 4, 64), kv_cache=cache, cache_tokens=3)
    assert len(cache) == 3
    attention(torch.randn(2, 2, 64), kv_cache=cache)
    assert len(cache) == 5


def test_top_k_then_top_p_filtering():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]))
    kept = filter_top_k_top_p(logits, top_k=3).isfinite()
    assert kept.tolist() == [[[True, True, True, False]]]
    kept = filter_top_k_top_p(logits, top_p=0.7).isfinite()
    assert kept.tolist() == [[[True, True, False, False]]]
    assert filter_top_k_top_p(logits, top_k=1, top_p=0.99).isfinite().sum() == 1


def test_greedy_sampling_is_identical_cached_and_uncached():
    transformer, vqvae = tiny_models()
    labels = torch.tensor([0, 1, 3, 4])
    runs = [ScaleSampler(transformer, vqvae, SamplingOptions(cfg=2.0, top_k=1, top_p=0.0, use_kv_cache=cached))
            .sample_indices(labels, torch_generator(0, "test-sample")) for cached in (True, False)]
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_sampling_is_deterministic_under_a_seed_and_varies_across_seeds():
    transformer, vqvae = tiny_models()
    labels = [0, 1, 2, 3]

    def draw(seed: int, cached: bool = True) -> torch.Tensor:
        return sample_images(transformer, vqvae, labels, cfg=1.5, top_k=20, top_p=0.9,
                             generator=torch_generator(seed, "test-sample"), use_kv_cache=cached)

    first = draw(0)
    assert first.shape == (4, 3, 8, 8) and 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, draw(0))
    assert not torch.equal(first, draw(1))
    torch.testing.assert_close(draw(0, cached=False), first, atol=1e-5, rtol=0)
