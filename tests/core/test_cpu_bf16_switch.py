"""The CUDA-only bf16 autocast, run on the CPU under the test switch DDBENCH_FORCE_AUTOCAST_CPU_BF16=1
through the same code (`ddbench.core.device.autocast`, `training.Precision`): VAR, HIERAMP and
DiT sampling on the shipped digits models, and the rded evaluator's student and teacher, run in
bf16 without a dtype error. Without the switch the CPU stays float32."""

from __future__ import annotations

import contextlib

import torch

from ddbench.core.device import FORCE_CPU_BF16, autocast
from ddbench.core.seeding import torch_generator
from ddbench.training import Precision

CPU = torch.device("cpu")


@contextlib.contextmanager
def output_dtypes(module: torch.nn.Module):
    """The dtypes of every Linear/Conv output inside `module` while the block runs."""
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype)) for m in module.modules()
             if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()


def test_the_switch_turns_cpu_autocast_on_and_only_then(monkeypatch):
    monkeypatch.delenv(FORCE_CPU_BF16, raising=False)
    with autocast(CPU):
        assert not torch.is_autocast_enabled("cpu")
    assert Precision(CPU).mode == "fp32"
    monkeypatch.setenv(FORCE_CPU_BF16, "1")
    with autocast(CPU):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with autocast(CPU, enabled=False):
        assert not torch.is_autocast_enabled("cpu")
    assert Precision(CPU).mode == "bf16"


def hieramp_tokens(model, vqvae, amplify: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    from ddbench.generators.var.sampling import SamplingOptions
    from ddbench.methods.hieramp.amplify import AmplificationPlan
    from ddbench.methods.hieramp.sampler import ClassTokenSampler

    plan = AmplificationPlan.resolve(num_scales=len(model.patch_nums), depth=len(model.blocks), beta=(5.0,),
                                     rho=(0.5,), blocks=(-2,)) if amplify else None
    sampler = ClassTokenSampler(model, vqvae, SamplingOptions(cfg=4.0, top_k=900, top_p=0.95), plan=plan)
    labels = torch.arange(10).repeat_interleave(2)
    generators = [torch_generator(0, "bf16-check", int(c), i % 2) for i, c in enumerate(labels)]
    with output_dtypes(model) as dtypes:
        tokens = sampler.sample_indices(labels, generators)
    generators = [torch_generator(0, "bf16-check", int(c), i % 2) for i, c in enumerate(labels)]
    images = sampler.sample(labels, generators)
    return tokens, images, dtypes


def test_hieramp_sampling_runs_in_bf16_on_cpu_and_mostly_agrees_with_float32(monkeypatch):
    from ddbench.methods.hieramp.digits_weights import load_digits_class_token_models

    model, vqvae, _ = load_digits_class_token_models()
    monkeypatch.delenv(FORCE_CPU_BF16, raising=False)
    fp32_tokens, fp32_images, fp32_dtypes = hieramp_tokens(model, vqvae, amplify=True)
    monkeypatch.setenv(FORCE_CPU_BF16, "1")
    bf16_tokens, bf16_images, bf16_dtypes = hieramp_tokens(model, vqvae, amplify=True)
    assert fp32_dtypes == {torch.float32} and torch.bfloat16 in bf16_dtypes
    assert bf16_images.dtype == torch.float32 and torch.isfinite(bf16_images).all()
    assert bf16_images.min() >= 0 and bf16_images.max() <= 1
    agreement = [(a == b).float().mean().item() for a, b in zip(fp32_tokens, bf16_tokens)]
    total = sum((a == b).sum().item() for a, b in zip(fp32_tokens, bf16_tokens)) / sum(a.numel() for a in fp32_tokens)
    print(f"\nHIERAMP digits tokens equal in bf16 and fp32: {total:.3f}; per scale {[round(x, 3) for x in agreement]}")
    # measured (20 images, seeded): 0.868 of all tokens; per scale 1.0, 0.975, 0.978, 0.919, 0.887, 0.82
    # (a differing draw changes every later scale of that image); a broken bf16 path agrees by chance only
    assert agreement[0] >= 0.9 and total >= 0.7


def test_dit_sampling_runs_in_bf16_on_cpu_close_to_float32(monkeypatch):
    from ddbench.generators.dit.sampling import DiTSampler
    from ddbench.generators.dit.shipped import load_digits_dit

    model = load_digits_dit()
    labels = torch.arange(10)

    def latents():
        generators = [torch_generator(0, "bf16-check", c) for c in range(10)]
        with output_dtypes(model) as dtypes:
            return DiTSampler(model).sample_latents(labels, generators), dtypes

    monkeypatch.delenv(FORCE_CPU_BF16, raising=False)
    fp32, fp32_dtypes = latents()
    monkeypatch.setenv(FORCE_CPU_BF16, "1")
    bf16, bf16_dtypes = latents()
    assert fp32_dtypes == {torch.float32} and torch.bfloat16 in bf16_dtypes
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    relative = ((bf16 - fp32).norm() / fp32.norm()).item()
    print(f"\ndigits DiT latents, bf16 vs fp32 (50 steps): relative difference {relative:.3f}")
    assert relative < 0.05  # measured 0.008


def test_rded_student_and_teacher_run_in_bf16_on_cpu(monkeypatch, tmp_path):
    from ddbench.core.config import resolve_config
    from ddbench.core.interfaces import EvalTask, Teacher
    from ddbench.evaluators.rded import RdedEvaluator
    from ddbench.models import create_model
    from tests.evaluators.synthetic import ColourSquares, write_distilled

    dataset = ColourSquares()
    torch.manual_seed(0)
    teacher = Teacher(create_model("convnet3", dataset.num_classes, dataset.resolution), "convnet3", dataset.name,
                      dataset.num_classes, accuracy=100.0)
    teacher_modules = {id(m) for m in teacher.model.modules()}
    seen: dict[str, set] = {"teacher": set(), "student": set()}

    def record(module, _inputs, output):
        if isinstance(output, torch.Tensor) and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            seen["teacher" if id(module) in teacher_modules else "student"].add(output.dtype)

    monkeypatch.setenv(FORCE_CPU_BF16, "1")
    config = resolve_config(RdedEvaluator.Config, RdedEvaluator.preset_for(dataset),
                            {"epochs": 2, "validate_every": 1, "validate_last_fraction": 1.0})
    task = EvalTask(dataset=dataset, student="resnet18", seed=0, device=CPU, teacher=teacher)
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        result = RdedEvaluator(config).evaluate(write_distilled(dataset, tmp_path / "set"), task)
    finally:
        handle.remove()
    assert seen["teacher"] == {torch.bfloat16} and torch.bfloat16 in seen["student"]
    assert all(torch.isfinite(torch.tensor(loss)) for loss in result.details["epoch_losses"])
    assert 0.0 <= result.metrics["top1_final"] <= 100.0
