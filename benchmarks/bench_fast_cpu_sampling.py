"""HIERAMP sampling at d16 size on a CPU: the `fast_cpu` kernels against the plain ones, interleaved.

The `ddbench run --method hieramp` path (ClassTokenSampler.sample: CFG, top-k 900, top-p 0.95,
amplification with the released defaults, one generator per image) on the release's d16 shape
(16 blocks, width 1024, the 10-scale pyramid, 680 tokens, the ch160 VQ-VAE decoding 256 px) with
random weights, float32, one intra-op thread by default. `SamplingOptions(fast_cpu=False)` is the code before
the change (F.linear on MKL, NCHW decode with nearest-upsample convs, f_hat summed again for the
decode, the amplified block's explicit logits); `fast_cpu=True` (the default) prepacks the linears
for oneDNN with the GELU fused, computes the AdaLN parameters once per sample, keeps the amplified
block on SDPA with the amplification in its mask, and decodes the sampled f_hat channels-last with
sub-pixel upsampling convs and in-place activations (ddbench.generators.var.cpu_kernels).

Rounds alternate old, new on the same labels and seeds; each batch is timed by the process's CPU
time and each path keeps its fastest round, so load on shared cores hits both alike. The tokens
must be identical and the images equal to float rounding. A d16 image takes seconds on a CPU:
the default batch is 2 (DDBENCH_BENCH_BATCH=25 for the method's batch, DDBENCH_BENCH_ROUNDS;
DDBENCH_BENCH_THREADS=2 for both cores, timed by the wall clock, which needs a quiet machine).
Run: OMP_NUM_THREADS=1 pytest benchmarks/bench_fast_cpu_sampling.py -s -p no:cacheprovider

Measured here on a quiet machine: batch 2, 3 rounds, 2 threads (wall) 6.30 -> 5.09 s/img, 1.238x;
1 thread (CPU time) 11.39 -> 9.54 s/img, 1.194x. With fast_cpu's chunks of 4 (`cpu_chunk`), one
round: batch 10, 1 thread, 12.07 -> 9.63 s/img, 1.253x; batch 25, 2 threads, 6.69 -> 5.19 s/img,
1.289x (1.239x before the chunking). Earlier, on the same CPU shared with other jobs
(load ~9, batch 2, 3 rounds): 12.62 -> 10.28 s/img, 1.228x; the same tokens, images 1.5e-5 apart.
Batch 25, one round, load 14 falling to 2: 13.32 and 11.10 s/img, 1.200x (images 2.1e-5 apart).
Where it comes from (per-op profiles, batch 5): the linears are 51% of the plain path (MKL sgemm, ~90 GFLOP/s here) and run at
~105-110 GFLOP/s prepacked on oneDNN; the decode's convolutions (30%) lose the 4 upsampling convs'
20/36 of their multiply-adds; the amplified block no longer forms its (2B, 16, l+1, P+l+1) logits.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from ddbench.core.seeding import torch_generator
from ddbench.generators.var.configs import RELEASE_PATCH_NUMS, VARConfig, VQVAEConfig
from ddbench.generators.var.cpu_kernels import onednn_linear_available
from ddbench.generators.var.loading import build_var, build_vqvae
from ddbench.generators.var.sampling import SamplingOptions
from ddbench.methods.hieramp.amplify import AmplificationPlan
from ddbench.methods.hieramp.model import load_class_token_var
from ddbench.methods.hieramp.sampler import ClassTokenSampler

BATCH = int(os.environ.get("DDBENCH_BENCH_BATCH", "2"))
ROUNDS = int(os.environ.get("DDBENCH_BENCH_ROUNDS", "3"))
#: intra-op threads; with more than one, rounds are timed by the wall clock (CPU time sums the threads)
THREADS = int(os.environ.get("DDBENCH_BENCH_THREADS", "1"))
clock = time.process_time if THREADS == 1 else time.perf_counter
#: a guard that fails when the fast path stops paying (e.g. falls back to the plain kernels); issue 20's
#: bar for the method path is 1.22x (1.07x -> 1.3x against the release), printed alongside
MIN_RATIO = 1.15
ISSUE_BAR = 1.22
PATHS = ("plain", "fast_cpu")


@pytest.fixture(scope="module")
def samplers():
    if not onednn_linear_available():
        pytest.skip("this torch build has no oneDNN linear; fast_cpu falls back to the plain kernels")
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    vqvae_config = VQVAEConfig(patch_nums=RELEASE_PATCH_NUMS)
    torch.manual_seed(0)
    vqvae = build_vqvae(vqvae_config).eval()
    plain = build_var(VARConfig(depth=16, embed_dim=1024, num_heads=16, patch_nums=RELEASE_PATCH_NUMS), vqvae_config)
    plain.init_weights(torch_generator(0, "bench-init"))
    model, vqvae, _ = load_class_token_var(plain.state_dict(), vqvae)
    del plain
    plan = AmplificationPlan.resolve(num_scales=len(RELEASE_PATCH_NUMS), depth=len(model.blocks), beta=(5.0,),
                                     rho=(0.5,), blocks=(-2,))
    yield {path: ClassTokenSampler(model, vqvae, SamplingOptions(cfg=4.0, top_k=900, top_p=0.95,
                                                                 fast_cpu=path == "fast_cpu"), plan)
           for path in PATHS}
    torch.set_num_threads(threads)


def generators_again(labels: torch.Tensor) -> list[torch.Generator]:
    """One generator per image, as the method makes them (fresh for every call)."""
    return [torch_generator(0, "hieramp-sample", int(label), i) for i, label in enumerate(labels)]


def test_fast_cpu_kernels_against_the_plain_ones(samplers):
    for sampler in samplers.values():  # warm-up: first-call allocations, the oneDNN weight packing
        sampler.sample(torch.tensor([5]), [torch_generator(0, "hieramp-sample", 5, 0)])
    labels = torch.arange(BATCH) * 37 % 1000
    best = {path: float("inf") for path in PATHS}
    images = {}
    for _ in range(ROUNDS):
        for path in PATHS:
            started = clock()
            images[path] = samplers[path].sample(labels, generators_again(labels))
            best[path] = min(best[path], clock() - started)
    tokens = {path: samplers[path].sample_indices(labels[:1], generators_again(labels[:1])) for path in PATHS}
    assert all(torch.equal(a, b) for a, b in zip(tokens["plain"], tokens["fast_cpu"]))
    difference = (images["plain"] - images["fast_cpu"]).abs().max().item()
    ratio = best["plain"] / best["fast_cpu"]
    print(f"\nhieramp d16 method path, batch {BATCH}, {ROUNDS} interleaved rounds, {THREADS} thread(s), "
          f"{'CPU' if THREADS == 1 else 'wall'} time, load "
          f"{os.getloadavg()[0]:.1f}: plain {best['plain'] / BATCH:.2f} s/img, fast_cpu "
          f"{best['fast_cpu'] / BATCH:.2f} s/img: {ratio:.3f}x images/s (issue bar {ISSUE_BAR}x: "
          f"{'met' if ratio >= ISSUE_BAR else 'NOT met'}); images differ by {difference:.1e} at most")
    assert difference < 1e-4
    assert ratio >= MIN_RATIO
