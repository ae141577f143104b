"""HIERAMP sampling at d16 size: images/s at batch 1, 10 and 25, one generator per image.

The model has the release's d16 shape (16 blocks, width 1024, 16 heads, 1,000 classes, vocabulary
4096, the ch160 VQ-VAE) with random weights, class tokens and amplification on (released defaults),
CFG on, top-k 900, top-p 0.95. Each batch size samples that many images in one call with per-image
generators (the path `ddbench run` takes), so the tokens are the same for every batch size and only
the speed differs. bf16 autocast on CUDA; float32 and one intra-op thread on a CPU.

Default pyramid: the release's first 4 scales (1..4, 30 tokens, 64 px images) so that one round
of all three batch sizes (36 images) stays within a few minutes on a shared 2-core CPU; the full release pyramid
(10 scales, 680 tokens, 256 px) runs with DDBENCH_BENCH_SCALES=release (on a CPU that is about
0.6 + 0.4 TFLOP per image and the batch-25 KV cache alone is 4.5 GB in float32).
Run: pytest benchmarks/bench_batched_sampling.py -s -p no:cacheprovider

Measured here (default pyramid, shared 2-core CPU, load ~7, one thread, 2 minutes in all): batch 1
0.24 img/s, batch 10 0.69 img/s (2.9x), batch 25 0.65 img/s (2.7x). With 30 tokens per image the
batch-1 path reads all 310M weights for a handful of tokens (memory-bound), so batching wins more
here than on the full 680-token pyramid, where the issue measured about +15% on a CPU.
"""

from __future__ import annotations

import os

import pytest
import torch

from ddbench.core.seeding import torch_generator
from ddbench.generators.var.configs import RELEASE_PATCH_NUMS, VARConfig, VQVAEConfig
from ddbench.generators.var.loading import build_var, build_vqvae
from ddbench.generators.var.sampling import SamplingOptions
from ddbench.methods.hieramp.amplify import AmplificationPlan
from ddbench.methods.hieramp.model import load_class_token_var
from ddbench.methods.hieramp.sampler import ClassTokenSampler

BATCH_SIZES = (1, 10, 25)
ROUNDS = 1
#: batching must not make sampling slower per image (a loose guard; the figures are printed)
MIN_RATIO = 0.9
OPTIONS = SamplingOptions(cfg=4.0, top_k=900, top_p=0.95)
IMAGES_PER_SECOND: dict[int, float] = {}


def patch_nums() -> tuple[int, ...]:
    return RELEASE_PATCH_NUMS if os.environ.get("DDBENCH_BENCH_SCALES") == "release" else RELEASE_PATCH_NUMS[:4]


@pytest.fixture(scope="module")
def sampler():
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)  # shared cores: more threads than free cores made batch 1 ten times slower here
    scales = patch_nums()
    vqvae_config = VQVAEConfig(patch_nums=scales)  # the release's ch160 VQ-VAE
    torch.manual_seed(0)
    vqvae = build_vqvae(vqvae_config).eval()
    plain = build_var(VARConfig(depth=16, embed_dim=1024, num_heads=16, patch_nums=scales), vqvae_config)
    plain.init_weights(torch_generator(0, "bench-init"))
    model, vqvae, _ = load_class_token_var(plain.state_dict(), vqvae, device=device)
    del plain
    plan = AmplificationPlan.resolve(num_scales=len(scales), depth=len(model.blocks), beta=(5.0,), rho=(0.5,),
                                     blocks=(-2,))
    hieramp = ClassTokenSampler(model, vqvae, OPTIONS, plan)
    _batch(device, hieramp, 2)()  # warm-up: first-call allocations and kernel selection
    yield device, hieramp
    torch.set_num_threads(threads)


def _batch(device, sampler, size: int):
    labels = torch.arange(size, device=device) * 37 % 1000

    def run():
        generators = [torch_generator(0, "hieramp-sample", int(label), i, device=device) for i, label in enumerate(labels)]
        images = sampler.sample(labels, generators)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return images
    return run


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_images_per_second(benchmark, sampler, batch_size):
    device, hieramp = sampler
    benchmark.group = f"hieramp d16 sampling ({len(patch_nums())} scales, CFG, per-image generators)"
    images = benchmark.pedantic(_batch(device, hieramp, batch_size), rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert images.shape[0] == batch_size
    IMAGES_PER_SECOND[batch_size] = batch_size / benchmark.stats.stats.min


def test_batching_pays():
    if set(BATCH_SIZES) - set(IMAGES_PER_SECOND):
        pytest.skip("needs every batch size in the same run")
    base = IMAGES_PER_SECOND[1]
    print("\nhieramp d16 sampling: " + ", ".join(
        f"batch {b}: {IMAGES_PER_SECOND[b]:.2f} img/s ({IMAGES_PER_SECOND[b] / base:.2f}x)" for b in BATCH_SIZES))
    assert IMAGES_PER_SECOND[10] >= MIN_RATIO * base
