"""VAR speed on CPU: sampling images/s with the KV cache vs recomputing the prefix, and training tokens/s.

Same narrow, randomly initialised model (depth 8, width 128, vocabulary 4096) and the same seeds for
both sampling modes, on the release's 10-scale pyramid (680 tokens per image), CFG on, top-k 900,
top-p 0.96. Run: pytest benchmarks/bench_var_sampling.py -s -p no:cacheprovider

What the cache can win: without it, scale k re-runs every token of scales 0..k, so the blocks process
sum(prefix lengths) = 1710 tokens per image instead of 680 (2.51x), and attention costs
sum(prefix^2) vs sum(l_k * prefix) (2.60x). Sampling filters, the head on the current scale and the
decoder cost the same in both modes. So the cache saves at most about 2.5-2.6x of the work on this
pyramid, and the issue's "at least 3x" is out of reach unless the baseline is wasteful. On a 2-core CPU the fixed costs
(top-k/top-p over 4096 codes for 5440 tokens, the head, decoding) take about a third of a cached
run, and a shared CPU adds noise; the ratio uses each mode's fastest round, we assert only that
the cache clearly wins (MIN_SPEEDUP) and print the figures. One run on the loaded 2-core CPU here:
0.59 vs 0.23 img/s on mean times (2.55x), 1.83x on fastest rounds.
"""

from __future__ import annotations

import pytest
import torch

from ddbench.core.seeding import torch_generator
from ddbench.generators.var.configs import BENCHMARK_VAR, BENCHMARK_VQVAE, TrainConfig
from ddbench.generators.var.loading import build_var, build_vqvae
from ddbench.generators.var.sampling import SamplingOptions, ScaleSampler
from ddbench.generators.var.training import make_optimizer, training_step_function

BATCH = 8
ROUNDS = 2
MIN_SPEEDUP = 1.5
RESULTS: dict[str, float] = {}


def prefix_work_bound(patch_nums) -> float:
    """Tokens processed without the cache over tokens processed with it."""
    ends, total = [], 0
    for side in patch_nums:
        total += side * side
        ends.append(total)
    return sum(ends) / total


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    vqvae = build_vqvae(BENCHMARK_VQVAE).eval()
    transformer = build_var(BENCHMARK_VAR, BENCHMARK_VQVAE)
    transformer.init_weights(torch_generator(0, "bench-init"))
    return transformer.eval(), vqvae


def _sample(models, use_kv_cache: bool):
    transformer, vqvae = models
    sampler = ScaleSampler(transformer, vqvae, SamplingOptions(cfg=1.5, top_k=900, top_p=0.96, use_kv_cache=use_kv_cache))
    labels = torch.arange(BATCH) % BENCHMARK_VAR.num_classes
    return lambda: sampler.sample(labels, torch_generator(0, "bench-sample"))


@pytest.mark.parametrize("use_kv_cache", [True, False], ids=["kv_cache", "recompute_prefix"])
def test_sampling_images_per_second(benchmark, models, use_kv_cache):
    benchmark.group = "var-sampling (10 scales, 680 tokens/image, CFG)"
    images = benchmark.pedantic(_sample(models, use_kv_cache), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert images.shape == (BATCH, 3, 32, 32)
    RESULTS["cached" if use_kv_cache else "uncached"] = BATCH / benchmark.stats.stats.min


def test_kv_cache_speedup():
    if {"cached", "uncached"} - set(RESULTS):
        pytest.skip("needs both sampling benchmarks in the same run")
    ratio = RESULTS["cached"] / RESULTS["uncached"]
    print(f"\nVAR sampling, narrow model (depth {BENCHMARK_VAR.depth}, width {BENCHMARK_VAR.embed_dim}), batch {BATCH}: "
          f"(fastest round) KV cache {RESULTS['cached']:.2f} img/s, recompute prefix {RESULTS['uncached']:.2f} img/s, ratio {ratio:.2f}x "
          f"(token-count bound {prefix_work_bound(BENCHMARK_VAR.patch_nums):.2f}x)")
    assert ratio >= MIN_SPEEDUP


def test_training_step_tokens_per_second(benchmark, models):
    transformer, vqvae = models
    generator = torch_generator(0, "bench-tokens")
    tokens = [torch.randint(BENCHMARK_VQVAE.vocab_size, (BATCH, pn * pn), generator=generator) for pn in BENCHMARK_VAR.patch_nums]
    labels = torch.arange(BATCH) % BENCHMARK_VAR.num_classes
    transformer.train()
    step = training_step_function(transformer, vqvae, tokens, labels, make_optimizer(transformer, TrainConfig()))
    benchmark.group = "var-training"
    benchmark.pedantic(step, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    transformer.eval()
    tokens_per_second = BATCH * transformer.total_tokens / benchmark.stats.stats.min
    print(f"\nVAR training step: {tokens_per_second:,.0f} tokens/s (batch {BATCH} x {transformer.total_tokens} tokens)")
