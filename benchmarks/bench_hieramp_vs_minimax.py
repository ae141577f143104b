"""`hieramp` (VAR, next-scale prediction) vs `minimax` (DiT, 50 respaced DDPM steps): latency per image, one run.

Matched models, randomly initialised: both transformers have width 128, depth 8, 2 heads (the VAR
benchmark config) and end on a 16x16 token grid; both decoders are narrow (channels 32, multipliers
(1, 2), one block per level) and make 32 px images from a 16x16 latent: the VAR benchmark VQ-VAE and
a diffusers AutoencoderKL of the same shape (what Minimax decodes with, narrowed). Both sample batch 1
with classifier-free guidance on a doubled batch (cfg 4): HIERAMP with its released amplification
(10 scales, 680 tokens, KV cache), Minimax with the release's 50 steps over 256 tokens. The ratio comes
from rounds that interleave the two image by image, each timed by the process's CPU time on a CPU
(wall time on a GPU), keeping each one's fastest; one intra-op thread on a CPU.
Run: pytest benchmarks/bench_hieramp_vs_minimax.py -s
Paper (A6000, batch 1): HIERAMP 0.147 s/img, a 30-step DDIM diffusion baseline 0.456 s/img (3.1x).
"""

from __future__ import annotations

import time

import pytest
import torch

from bench_hieramp import benchmark_samplers  # pytest puts this folder on sys.path
from ddbench.core.seeding import torch_generator
from ddbench.generators.dit.codecs import SDVAECodec
from ddbench.generators.dit.config import DiTConfig
from ddbench.generators.dit.model import DiT
from ddbench.generators.dit.sampling import DiTSampler, SamplingOptions
from ddbench.generators.var.configs import BENCHMARK_VAR

RATIO_ROUNDS = 5
METHODS = ("hieramp", "minimax")
LATENCY: dict[str, float] = {}
BENCHMARK_DIT = DiTConfig(input_size=16, patch_size=1, in_channels=4, hidden_size=BENCHMARK_VAR.embed_dim,
                          depth=BENCHMARK_VAR.depth, num_heads=BENCHMARK_VAR.num_heads,
                          num_classes=BENCHMARK_VAR.num_classes)


@pytest.fixture(scope="module")
def runners():
    diffusers = pytest.importorskip("diffusers")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    hieramp = benchmark_samplers(device)["hieramp"]  # bench_hieramp.py's model and released amplification
    dit = DiT(BENCHMARK_DIT)
    dit.initialize_weights(torch_generator(0, "bench-dit-init"))
    with torch.no_grad():  # nonzero adaLN and output layers, so every step does its full work
        for parameter in dit.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch_generator(0, "bench-dit")) * 0.02)
    dit = dit.to(device)
    vae = diffusers.AutoencoderKL(block_out_channels=(32, 64), layers_per_block=1, latent_channels=4,
                                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    codec = SDVAECodec(vae.to(device))
    minimax = DiTSampler(dit, SamplingOptions(steps=50, cfg=4.0))

    def run_hieramp(index: int) -> None:
        label = torch.tensor([index % BENCHMARK_VAR.num_classes], device=device)
        hieramp.sample(label, torch_generator(0, "hieramp-sample", index, index, device=device))

    def run_minimax(index: int) -> None:
        label = torch.tensor([index % BENCHMARK_DIT.num_classes])
        latents = minimax.sample_latents(label, [torch_generator(0, "dit-sample", index, index, device=device)])
        with torch.no_grad():
            codec.decode(latents)

    yield device, {"hieramp": run_hieramp, "minimax": run_minimax}
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method", METHODS)
def test_generation_latency_per_image(benchmark, runners, method):
    _, run = runners
    benchmark.group = "hieramp (VAR) vs minimax (DiT, 50 steps): latency per image, batch 1, CFG"
    benchmark.pedantic(run[method], args=(0,), rounds=3, iterations=1, warmup_rounds=1)


def test_latency_ratio(runners):
    device, run = runners
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    for round_index in range(RATIO_ROUNDS):
        for method in METHODS:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = clock()
            run[method](round_index)
            if device.type == "cuda":
                torch.cuda.synchronize()
            LATENCY[method] = min(LATENCY.get(method, float("inf")), clock() - started)
    ratio = LATENCY["minimax"] / LATENCY["hieramp"]
    kind = "wall" if device.type == "cuda" else "CPU"
    print(f"\nhieramp {LATENCY['hieramp'] * 1000:.1f} ms/img, minimax {LATENCY['minimax'] * 1000:.1f} ms/img "
          f"({kind} time): minimax/hieramp = {ratio:.1f}x (paper, 30-step DDIM vs HIERAMP on an A6000: 3.1x)")
    assert ratio > 1.0  # 50 full-grid denoising passes cannot beat 10 cached scales
