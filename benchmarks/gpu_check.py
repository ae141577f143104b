"""The GPU check: one table of what only a GPU can tell, in under 8 minutes on one GPU.

    benchmarks/gpu_check.sh [--device auto|cuda|cpu] [--tiny] [--scales N] [--cpu-bf16] [--json FILE]

Rows (each through the package's own code: `resolve_device`, the bf16 autocast policy of
`core.device` / `training.Precision`, the samplers, the rded evaluator's recipe and objective,
`training.parallel.wrap_data_parallel`):
- agreement: the shipped digits VAR, class-token VAR (HIERAMP) and DiT on the device (under the
  package's precision policy: bf16 autocast on CUDA) against the same models in float32 on the CPU.
  VAR/HIERAMP: teacher-forced on tokens the CPU model sampled; the share of positions whose argmax
  token (and class-head class) agree, and the largest |logit difference|. DiT: the sampler run
  from the same noise (drawn on the CPU), the largest |difference| of the first step's guided
  output and of the final latents. (Sampled tokens are not compared: CUDA and CPU generators draw
  different numbers from one seed.)
- HIERAMP d16 sampling (the release's shape, random weights, CFG 4, top-k 900, top-p 0.95, per-image
  generators as `ddbench run` samples): images/s at batch 1, 10 and 25 (benchmarks/bench_batched_sampling.py).
- amplification overhead: hieramp over var-cls (and var-cls over var) per image at batch 1, the
  benchmark VAR, interleaved rounds keeping each method's fastest (benchmarks/bench_hieramp.py).
- rded evaluator step: ResNet-18 student and teacher at 224 px, batch 50 and 100, the evaluator's
  recipe, objective and student preparation through `train_classifier` (augmentation, CutMix, schedule).
- DDP step: a one-process group (NCCL on CUDA, gloo on the CPU), ResNet-18 in the package's DDP
  wrapper; step time and the largest gradient difference from the same step without DDP (0 on a
  CPU; on CUDA at most the noise of nondeterministic cuDNN kernels).

`--device cpu` runs it all on the CPU (slowly: the d16 pyramid is cut to its first 4 scales unless
`--scales` says otherwise, and each timing is one round); `--tiny` shrinks every model and batch so the whole table takes seconds
(the test suite runs it so); `--cpu-bf16` sets the package's test switch that gives the CPU the
CUDA bf16 autocast, so the agreement rows show bf16 against float32 without a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Callable

import torch

from ddbench.core.config import resolve_config
from ddbench.core.device import FORCE_CPU_BF16, autocast, bf16_autocast_on, resolve_device
from ddbench.core.interfaces import EvalTask, Teacher
from ddbench.core.registry import create_dataset
from ddbench.core.seeding import torch_generator
from ddbench.generators.var.configs import BENCHMARK_VAR, BENCHMARK_VQVAE, PRESETS, RELEASE_PATCH_NUMS, VARConfig, VQVAEConfig
from ddbench.generators.var.sampling import SamplingOptions
from ddbench.training import Precision, build_seeded_model
from ddbench.training.data import TensorImageSet

CPU = torch.device("cpu")
OPTIONS = SamplingOptions(cfg=4.0, top_k=900, top_p=0.95)
#: the release's d16 (310M parameters) and its ch160 VQ-VAE
D16 = VARConfig(depth=16, embed_dim=1024, num_heads=16)
D16_VQVAE = VQVAEConfig()
CPU_D16_SCALES = 4  # a CPU samples the first 4 scales of the release pyramid (30 tokens, 64 px)


@dataclass(frozen=True)
class Sizes:
    """How big every check runs: the full table (a GPU) or the tiny one (the test suite)."""

    agreement_batch: int = 10
    dit_steps: int = 50
    d16: VARConfig = D16
    d16_vqvae: VQVAEConfig = D16_VQVAE
    d16_batches: tuple[int, ...] = (1, 10, 25)
    d16_rounds: int = 3
    overhead_var: VARConfig = BENCHMARK_VAR
    overhead_vqvae: VQVAEConfig = BENCHMARK_VQVAE
    overhead_rounds: int = 10
    student: str = "resnet18"
    resolution: int = 224
    rded_batches: tuple[int, ...] = (50, 100)
    timed_steps: int = 10
    ddp_batch: int = 64


FULL = Sizes()
#: a CPU runs the full sizes once each instead of timing rounds (ResNet-18 at 224 px and batch 100 is
#: about half a minute per step on one core)
FULL_ON_CPU = replace(FULL, d16_rounds=1, overhead_rounds=5, timed_steps=1)
TINY = Sizes(agreement_batch=2, dit_steps=3, d16=PRESETS["digits"].var, d16_vqvae=PRESETS["digits"].vqvae,
             d16_batches=(1, 2), d16_rounds=1, overhead_var=PRESETS["digits"].var,
             overhead_vqvae=PRESETS["digits"].vqvae, overhead_rounds=2, resolution=32, rded_batches=(2, 4),
             timed_steps=2, ddp_batch=2)


@dataclass
class Row:
    check: str
    setting: str
    result: str
    numbers: dict[str, float] = field(default_factory=dict)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precision_name(device: torch.device) -> str:
    return "bf16 autocast" if bf16_autocast_on(device) else "float32"


@contextlib.contextmanager
def float32_on_cpu():
    """The CPU reference in float32 even under the bf16 test switch."""
    saved = os.environ.pop(FORCE_CPU_BF16, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[FORCE_CPU_BF16] = saved


# ----- agreement of the device with the CPU on the shipped digits models -----
def teacher_forced(model, labels: torch.Tensor, indices: list[torch.Tensor], vqvae, device: torch.device, class_head: bool):
    """(token logits, class logits or None) in float32, on the CPU, under the device's autocast policy."""
    with torch.no_grad(), autocast(device):
        teacher_input = vqvae.quantize.teacher_forcing_input([scale.to(device) for scale in indices])
        if class_head:
            tokens, classes = model.forward_with_class_logits(labels.to(device), teacher_input)
            return tokens.float().cpu(), classes.float().cpu()
        return model(labels.to(device), teacher_input).float().cpu(), None


def var_agreement(name: str, load: Callable[[torch.device], tuple], device: torch.device, batch: int,
                  class_head: bool) -> Row:
    with float32_on_cpu():
        labels, indices = digit_tokens(batch)
        reference_model, reference_vqvae = load(CPU)
        expected = teacher_forced(reference_model, labels, indices, reference_vqvae, CPU, class_head)
    model, vqvae = load(device)
    got = teacher_forced(model, labels, indices, vqvae, device, class_head)
    numbers = {"token_agreement": float((got[0].argmax(-1) == expected[0].argmax(-1)).float().mean()),
               "max_abs_logit_diff": float((got[0] - expected[0]).abs().max())}
    result = f"token agreement {numbers['token_agreement']:.4f}, max abs Δ logit {numbers['max_abs_logit_diff']:.2e}"
    if class_head:
        numbers["class_agreement"] = float((got[1].argmax(-1) == expected[1].argmax(-1)).float().mean())
        result += f", class-head agreement {numbers['class_agreement']:.4f}"
    tokens = sum(scale.shape[1] for scale in indices)
    return Row(f"{device.type} vs cpu: {name}", f"teacher-forced, {batch} images x {tokens} tokens, "
               f"{precision_name(device)} vs float32", result, numbers)


def digit_tokens(batch: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(labels, per-scale token indices) that the shipped digits VAR samples on the CPU, in float32."""
    from ddbench.generators.var.sampling import ScaleSampler

    model, vqvae = load_digits_var(CPU)
    labels = torch.arange(batch) % model.num_classes
    generators = [torch_generator(0, "gpu-check-tokens", i) for i in range(batch)]
    return labels, ScaleSampler(model, vqvae, OPTIONS).sample_indices(labels, generators)


def load_digits_var(device: torch.device) -> tuple:
    from ddbench.generators.var import load_digits_models

    return load_digits_models(device)


def load_digits_hieramp(device: torch.device) -> tuple:
    from ddbench.methods.hieramp.digits_weights import load_digits_class_token_models

    model, vqvae, _ = load_digits_class_token_models(device)
    return model, vqvae


def dit_agreement(device: torch.device, batch: int, steps: int) -> Row:
    from ddbench.generators.dit.sampling import DiTSampler, SamplingOptions as DiTOptions, guided_output
    from ddbench.generators.dit.shipped import load_digits_dit

    options = DiTOptions(steps=steps)

    def run(on: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        sampler = DiTSampler(load_digits_dit(on), options)
        generator = torch_generator(0, "gpu-check-dit-noise")
        noises = [torch.randn((batch, *sampler.latent_shape), generator=generator) for _ in range(steps + 1)]
        labels = torch.arange(batch, device=on) % sampler.model.num_classes
        with torch.no_grad():
            t = torch.full((batch,), sampler.diffusion.num_steps - 1, device=on, dtype=torch.long)
            first, _, _ = guided_output(sampler.model, noises[0].to(on), sampler.diffusion.model_timesteps(t), labels,
                                        options.cfg, options.cfg_channels)
        latents = sampler.sample_latents(labels, [], noise_fn=lambda k: noises[k])
        return first.float().cpu(), latents.float().cpu()

    with float32_on_cpu():
        expected = run(CPU)
    got = run(device)
    numbers = {"max_abs_output_diff": float((got[0] - expected[0]).abs().max()),
               "max_abs_latent_diff": float((got[1] - expected[1]).abs().max()),
               "latent_scale": float(expected[1].abs().max())}
    return Row(f"{device.type} vs cpu: dit digits", f"{batch} images, {steps} steps from the same noise, "
               f"{precision_name(device)} vs float32",
               f"max abs Δ output first step {numbers['max_abs_output_diff']:.2e}, max abs Δ latent after {steps} steps "
               f"{numbers['max_abs_latent_diff']:.2e} (latents up to {numbers['latent_scale']:.2f})", numbers)


# ----- HIERAMP sampling speed -----
def samplers(var_config: VARConfig, vqvae_config: VQVAEConfig, device: torch.device, wanted: tuple[str, ...]) -> dict:
    """var / var-cls / hieramp samplers over one randomly initialised backbone (released
    amplification defaults: beta 5, rho 0.5, the second-to-last block)."""
    from ddbench.generators.var.loading import build_var, build_vqvae
    from ddbench.generators.var.sampling import ScaleSampler
    from ddbench.methods.hieramp.amplify import AmplificationPlan
    from ddbench.methods.hieramp.model import load_class_token_var
    from ddbench.methods.hieramp.sampler import ClassTokenSampler

    torch.manual_seed(0)
    vqvae = build_vqvae(vqvae_config).eval()
    plain = build_var(var_config, vqvae_config)
    plain.init_weights(torch_generator(0, "bench-init"))
    model, vqvae, _ = load_class_token_var(plain.state_dict(), vqvae, device=device)
    built = {}
    if "var" in wanted:
        built["var"] = ScaleSampler(plain.to(device).eval(), vqvae, OPTIONS)
    del plain
    if "var-cls" in wanted:
        built["var-cls"] = ClassTokenSampler(model, vqvae, OPTIONS)
    if "hieramp" in wanted:
        plan = AmplificationPlan.resolve(num_scales=len(model.patch_nums), depth=len(model.blocks), beta=(5.0,),
                                         rho=(0.5,), blocks=(-2,))
        built["hieramp"] = ClassTokenSampler(model, vqvae, OPTIONS, plan)
    return built


def sample_batch(sampler, device: torch.device, size: int, num_classes: int) -> Callable[[], torch.Tensor]:
    labels = torch.arange(size, device=device) * 37 % num_classes

    def run() -> torch.Tensor:
        generators = [torch_generator(0, "hieramp-sample", int(label), i, device=device) for i, label in enumerate(labels)]
        images = sampler.sample(labels, generators)
        synchronize(device)
        return images
    return run


def fastest(run: Callable[[], object], rounds: int, clock=time.perf_counter) -> float:
    best = math.inf
    for _ in range(rounds):
        started = clock()
        run()
        best = min(best, clock() - started)
    return best


def d16_rows(device: torch.device, sizes: Sizes, scales: int) -> list[Row]:
    patch_nums = RELEASE_PATCH_NUMS[:scales] if sizes.d16 is D16 else sizes.d16.patch_nums
    var_config, vqvae_config = replace(sizes.d16, patch_nums=patch_nums), replace(sizes.d16_vqvae, patch_nums=patch_nums)
    hieramp = samplers(var_config, vqvae_config, device, ("hieramp",))["hieramp"]
    sample_batch(hieramp, device, 2, var_config.num_classes)()  # warm-up: allocations, kernel selection
    shape = (f"d{var_config.depth} width {var_config.embed_dim}, {len(patch_nums)} scales "
             f"({sum(p * p for p in patch_nums)} tokens), CFG 4, {precision_name(device)}")
    rows = []
    for batch in sizes.d16_batches:
        seconds = fastest(sample_batch(hieramp, device, batch, var_config.num_classes), sizes.d16_rounds)
        rows.append(Row("hieramp d16 sampling", f"batch {batch}, {shape}", f"{batch / seconds:.2f} img/s "
                        f"({seconds:.3f} s per batch)", {"images_per_second": batch / seconds, "batch": batch}))
    return rows


def overhead_row(device: torch.device, sizes: Sizes) -> Row:
    by_method = samplers(sizes.overhead_var, sizes.overhead_vqvae, device, ("var", "var-cls", "hieramp"))
    runs = {method: sample_batch(sampler, device, 1, sizes.overhead_var.num_classes) for method, sampler in by_method.items()}
    clock = time.perf_counter if device.type == "cuda" else time.process_time  # CPU time: shared cores hit all alike
    for run in runs.values():
        run()  # warm-up
    best = {method: math.inf for method in runs}
    for _ in range(sizes.overhead_rounds):  # interleaved, so load changes hit every method alike
        for method, run in runs.items():
            best[method] = min(best[method], fastest(run, 1, clock))
    numbers = {f"{method}_ms": best[method] * 1000 for method in best}
    numbers["hieramp_over_var_cls"] = best["hieramp"] / best["var-cls"] - 1
    numbers["var_cls_over_var"] = best["var-cls"] / best["var"] - 1
    config = sizes.overhead_var
    return Row("amplification overhead", f"batch 1, CFG, depth {config.depth} width {config.embed_dim}, "
               f"{len(config.patch_nums)} scales, {sizes.overhead_rounds} interleaved rounds",
               f"hieramp {numbers['hieramp_over_var_cls']:+.1%} over var-cls (target <= +10%), var-cls "
               f"{numbers['var_cls_over_var']:+.1%} over var; {numbers['var_ms']:.1f} / {numbers['var-cls_ms']:.1f} / "
               f"{numbers['hieramp_ms']:.1f} ms per image", numbers)


# ----- the rded evaluator's training step -----
def rded_rows(device: torch.device, sizes: Sizes) -> list[Row]:
    from ddbench.evaluators.base import student_normalization
    from ddbench.evaluators.rded import RdedEvaluator
    from ddbench.models import to_device
    from ddbench.training import train_classifier

    dataset = create_dataset("woof", resolution=sizes.resolution)
    teacher_model = build_seeded_model(sizes.student, dataset.num_classes, sizes.resolution, 0, "gpu-check-teacher")
    teacher = Teacher(to_device(teacher_model, device), sizes.student, dataset.name, dataset.num_classes,
                      accuracy=100.0, source="gpu check stand-in (speed does not depend on its weights)")
    task = EvalTask(dataset=dataset, student=sizes.student, seed=0, device=device, teacher=teacher)
    rows = []
    for batch in sizes.rded_batches:
        evaluator = RdedEvaluator(resolve_config(RdedEvaluator.Config, {"epochs": 1, "batch_size": batch}))
        recipe = evaluator.recipe(SimpleNamespace(ipc=batch // dataset.num_classes or 1, shuffle_patch_factor=1), task)
        objective = evaluator.objective(task)
        mean, std = student_normalization(evaluator.config, dataset)
        generator = torch_generator(0, "gpu-check-rded-images", batch)

        def train(steps: int) -> float:
            count = steps * batch
            images = torch.randint(0, 256, (count, 3, sizes.resolution, sizes.resolution), dtype=torch.uint8,
                                   generator=generator)
            student = build_seeded_model(sizes.student, dataset.num_classes, sizes.resolution, 0, "student-init",
                                         init=evaluator.config.student_init)
            evaluator.prepare_student(student)
            _, history = train_classifier(student, recipe, TensorImageSet(images, torch.arange(count) % dataset.num_classes),
                                          objective, mean=mean, std=std, resolution=sizes.resolution, seed=0,
                                          device=device, amp=evaluator.config.amp)
            return history.train_seconds / steps

        train(2)  # warm-up: allocator, kernel selection for this batch shape
        seconds = train(sizes.timed_steps)
        mode = Precision(device, recipe.optim.precision).mode
        rows.append(Row("rded evaluator step", f"{sizes.student} student + teacher, {sizes.resolution} px, batch {batch}, "
                        f"{mode}, {sizes.timed_steps} timed step(s)", f"{seconds * 1000:.1f} ms per step "
                        f"({batch / seconds:.1f} img/s)", {"seconds_per_step": seconds, "batch": batch}))
    return rows


# ----- one data-parallel step in a one-process group -----
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ddp_row(device: torch.device, sizes: Sizes) -> Row:
    import torch.distributed as dist

    from ddbench.models import to_device
    from ddbench.training.parallel import wrap_data_parallel

    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        model = to_device(build_seeded_model(sizes.student, 10, sizes.resolution, 0, "gpu-check-ddp"), device)
        alone = copy.deepcopy(model)
        wrapped = wrap_data_parallel(model, device, broadcast_buffers=True)
        generator = torch_generator(0, "gpu-check-ddp-batch")
        images = torch.randn((sizes.ddp_batch, 3, sizes.resolution, sizes.resolution), generator=generator).to(device)
        labels = (torch.arange(sizes.ddp_batch) % 10).to(device)
        precision = Precision(device, "auto")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def gradients(module, parameters) -> list[torch.Tensor]:
            with precision.autocast():
                loss = torch.nn.functional.cross_entropy(module(images), labels)
            loss.backward()
            return [parameter.grad.detach().float().clone() for parameter in parameters]

        through_ddp, without = gradients(wrapped, model.parameters()), gradients(alone, alone.parameters())
        difference = max(float((a - b).abs().max()) for a, b in zip(through_ddp, without))
        scale = max(float(b.abs().max()) for b in without)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with precision.autocast():
                loss = torch.nn.functional.cross_entropy(wrapped(images), labels)
            precision.backward_step(loss, optimizer)
            synchronize(device)

        step()  # warm-up
        seconds = fastest(step, sizes.timed_steps)
    finally:
        dist.destroy_process_group()
    numbers = {"seconds_per_step": seconds, "max_abs_grad_diff": difference, "grad_scale": scale}
    return Row(f"DDP step ({backend}, 1 process)", f"{sizes.student}, {sizes.resolution} px, batch {sizes.ddp_batch}, "
               f"{precision.mode}", f"{seconds * 1000:.1f} ms per step, max abs Δ grad vs no DDP {difference:.2e} "
               f"(grads up to {scale:.2e})", numbers)


# ----- the table -----
def run_checks(device: torch.device, sizes: Sizes, scales: int, log: Callable[[str], None] = lambda text: None) -> list[Row]:
    checks: list[tuple[str, Callable[[], Row | list[Row]]]] = [
        ("agreement: var digits", lambda: var_agreement("var digits", load_digits_var, device, sizes.agreement_batch, False)),
        ("agreement: hieramp digits", lambda: var_agreement("hieramp digits", load_digits_hieramp, device,
                                                            sizes.agreement_batch, True)),
        ("agreement: dit digits", lambda: dit_agreement(device, sizes.agreement_batch, sizes.dit_steps)),
        ("hieramp d16 sampling", lambda: d16_rows(device, sizes, scales)),
        ("amplification overhead", lambda: overhead_row(device, sizes)),
        ("rded evaluator step", lambda: rded_rows(device, sizes)),
        ("ddp step", lambda: ddp_row(device, sizes)),
    ]
    rows: list[Row] = []
    for name, check in checks:
        started = time.perf_counter()
        made = check()
        rows.extend(made if isinstance(made, list) else [made])
        log(f"{name}: {time.perf_counter() - started:.1f} s")
    return rows


def markdown(rows: list[Row]) -> str:
    lines = ["| check | setting | result |", "|---|---|---|"]
    lines += [f"| {row.check} | {row.setting} | {row.result} |" for row in rows]
    return "\n".join(lines)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads), torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_check.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny models and batches (seconds; the test suite's setting)")
    parser.add_argument("--scales", type=int, default=None,
                        help=f"d16 pyramid scales (default: all 10 on CUDA, the first {CPU_D16_SCALES} on a CPU)")
    parser.add_argument("--cpu-bf16", action="store_true", help=f"set {FORCE_CPU_BF16}=1: the CUDA bf16 autocast on the CPU")
    parser.add_argument("--json", default=None, help="also write the rows (with their numbers) to this JSON file")
    args = parser.parse_args(argv)
    if args.cpu_bf16:
        os.environ[FORCE_CPU_BF16] = "1"
    device = resolve_device(args.device)
    if device.type == "cuda":  # DDP's device_ids and NCCL want the index (`cuda` alone has none)
        device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
        torch.cuda.set_device(device)
    scales = args.scales or (len(RELEASE_PATCH_NUMS) if device.type == "cuda" else CPU_D16_SCALES)
    sizes = TINY if args.tiny else FULL if device.type == "cuda" else FULL_ON_CPU
    started = time.perf_counter()
    rows = run_checks(device, sizes, scales, log=lambda text: print(text, file=sys.stderr, flush=True))
    total = time.perf_counter() - started
    print(f"GPU check on {describe(device)}{' (tiny sizes)' if args.tiny else ''}: {total:.0f} s\n")
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": describe(device), "seconds": total,
                       "rows": [row.__dict__ for row in rows]}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
