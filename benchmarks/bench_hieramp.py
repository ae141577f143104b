"""`var` vs `var-cls` vs `hieramp`: sampling latency per image and peak memory, in one run.

Same narrow, randomly initialised backbone (the generator's benchmark config: the release's 10-scale
pyramid, 680 tokens per image, depth 4, width 128), the same class tokens, the same seeds, batch 1
with CFG (the paper's Table 9 setting), one intra-op thread on a CPU. The ratios come from rounds
that interleave the three methods image by image and time each image by the process's CPU time on
a CPU (wall time on a GPU), keeping each method's fastest: other load on shared cores then hits all
three alike. Peak memory: CUDA's allocator peak on a GPU; on a CPU the peak of the allocations the
torch profiler records during one image. Amplification uses the
released defaults (beta 5, rho 0.5, scales 1..9, second-to-last block).
Run: pytest benchmarks/bench_hieramp.py -s
Paper (A6000): var 0.139 s, var-cls 0.145 (+4.3%), hieramp 0.147 s/img (+5.8%); 1.77 / 1.79 / 1.84 GB.
"""

from __future__ import annotations

import time

import pytest
import torch

from ddbench.core.seeding import torch_generator
from ddbench.generators.var.configs import BENCHMARK_VAR, BENCHMARK_VQVAE
from ddbench.generators.var.loading import build_var, build_vqvae
from ddbench.generators.var.sampling import SamplingOptions, ScaleSampler
from ddbench.methods.hieramp.amplify import AmplificationPlan
from ddbench.methods.hieramp.model import load_class_token_var
from ddbench.methods.hieramp.sampler import ClassTokenSampler

IMAGES = 1  # images per pytest-benchmark round
ROUNDS = 3
RATIO_ROUNDS = 10  # interleaved rounds for the ratios
OPTIONS = SamplingOptions(cfg=4.0, top_k=900, top_p=0.95)
LATENCY: dict[str, float] = {}
MEMORY: dict[str, float] = {}
METHODS = ("var", "var-cls", "hieramp")


def benchmark_samplers(device: torch.device) -> dict:
    """The benchmark's var, var-cls and hieramp samplers (released amplification defaults)."""
    torch.manual_seed(0)
    vqvae = build_vqvae(BENCHMARK_VQVAE).eval()
    plain = build_var(BENCHMARK_VAR, BENCHMARK_VQVAE)
    plain.init_weights(torch_generator(0, "bench-init"))
    model, vqvae, _ = load_class_token_var(plain.state_dict(), vqvae, device=device)
    plain = plain.to(device).eval()
    plan = AmplificationPlan.resolve(num_scales=len(model.patch_nums), depth=len(model.blocks), beta=(5.0,),
                                     rho=(0.5,), blocks=(-2,))
    return {"var": ScaleSampler(plain, vqvae, OPTIONS), "var-cls": ClassTokenSampler(model, vqvae, OPTIONS),
            "hieramp": ClassTokenSampler(model, vqvae, OPTIONS, plan)}


@pytest.fixture(scope="module")
def samplers():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    yield device, benchmark_samplers(device)
    torch.set_num_threads(threads)


def _images(device, sampler):
    def run():
        for index in range(IMAGES):
            label = torch.tensor([index % BENCHMARK_VAR.num_classes], device=device)
            sampler.sample(label, torch_generator(0, "hieramp-sample", index, index, device=device))
    return run


def _peak_bytes(device, run) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as recorded:
        run()
    live = peak = 0
    for event in sorted(recorded.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return float(peak)


@pytest.mark.parametrize("method", METHODS)
def test_sampling_latency_per_image(benchmark, samplers, method):
    device, by_method = samplers
    benchmark.group = "hieramp: latency per image (batch 1, CFG, 680 tokens)"
    benchmark.pedantic(_images(device, by_method[method]), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    MEMORY[method] = _peak_bytes(device, _images(device, by_method[method]))


def test_overheads_against_the_paper(samplers):
    device, by_method = samplers
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    runs = {method: _images(device, sampler) for method, sampler in by_method.items()}
    for _ in range(RATIO_ROUNDS):
        for method in METHODS:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = clock()
            runs[method]()
            if device.type == "cuda":
                torch.cuda.synchronize()
            LATENCY[method] = min(LATENCY.get(method, float("inf")), (clock() - started) / IMAGES)
    if set(METHODS) - set(MEMORY):
        for method in METHODS:
            MEMORY[method] = _peak_bytes(device, runs[method])
    cls_over = LATENCY["var-cls"] / LATENCY["var"] - 1
    amp_over_var = LATENCY["hieramp"] / LATENCY["var"] - 1
    amp_over_cls = LATENCY["hieramp"] / LATENCY["var-cls"] - 1
    memory, kind = {m: MEMORY[m] / 2**20 for m in METHODS}, "wall" if device.type == "cuda" else "CPU"
    print("\n" + " | ".join(f"{m}: {LATENCY[m] * 1000:.1f} ms/img ({kind} time), peak {memory[m]:.2f} MiB"
                            for m in METHODS))
    print(f"latency: var-cls {cls_over:+.1%} over var (paper +4.3%), hieramp {amp_over_var:+.1%} over var "
          f"(paper +5.8%), {amp_over_cls:+.1%} over var-cls (target <= +10%); "
          f"peak memory hieramp/var {MEMORY['hieramp'] / MEMORY['var']:.3f} (paper 1.040)")
    assert amp_over_cls <= 0.10
