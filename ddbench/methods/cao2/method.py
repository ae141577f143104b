"""`cao2`: CaO2 (ICCV 2025; hatchetProject/CaO2 @ 6381e50) on ddbench's own DiT and respaced sampler.

Per class: sample `candidates_factor * IPC` candidates (50 respaced steps, CFG 2.7 on eps channels 0-2,
null label = class count), decode them, score them with a classifier (`scorer.py`), keep IPC of them
(`algorithm.select_candidates`), refine each kept clean latent (`algorithm.refine_latents`), decode and
save. The dataset presets are upstream's scripts: woof and ImageNet-1K (`sample_woof.py`,
`sample_imagenet.py`): 4x candidates, most confident first, 100 refinement steps, t in 1..11;
nette (`sample_nette.py`): 2x, most confident first, no refinement; ImageNet-100
(`sample_imagenet100.py`): 2x, least confident first, t in 1..5.

Seeding (upstream: `manual_seed(42)` inside the noise bank overrides `--seed`, numpy is unseeded):
candidate j of class c draws its start and step noise from (seed, "cao2-candidate", c, j); selected
image i of class c draws its fixed eps, its refinement timesteps and (class-label mode) its label
dropout from (seed, "cao2-refine", c, i). There is no shared noise bank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from PIL import Image

from ddbench.core.errors import ConfigError
from ddbench.core.images import fit_to_resolution
from ddbench.core.interfaces import DatasetSpec, DistillTask
from ddbench.generators.dit.codecs import to_uint8
from ddbench.generators.dit.sampling_method import DiTSamplingConfig, DiTSamplingMethod
from ddbench.generators.dit.shipped import DIGITS_DIT_WEIGHTS
from ddbench.methods.cao2.algorithm import (MODEL_TIMESTEPS, REFINE_LABELS, RefineOptions, per_image_timesteps,
                                            refine_latents, refine_timesteps, select_candidates, softmax_scores)
from ddbench.methods.cao2.scorer import (IMAGENET_SCORER, TEACHER, load_scorer, prepare_input, scorer_identity,
                                         scorer_record)

CANDIDATE_PURPOSE = "cao2-candidate"
REFINE_PURPOSE = "cao2-refine"


@dataclass
class CaO2Config(DiTSamplingConfig):
    """Upstream's sample_woof.py defaults; the dataset presets below are its other scripts."""

    cfg: float = 2.7
    candidates_factor: int = 4  # candidates per class = factor * IPC (nette, ImageNet-100: 2)
    most_confident_first: bool = True  # ImageNet-100: False (least confident correct ones first)
    scorer: str = TEACHER  # teacher | a weights-table row (ImageNet family: resnet18_tv_in1k) | a ResNet-18 file
    scorer_input: str = "normalized"  # raw (upstream: decoder output resized, no mapping) | normalized (teacher)
    scorer_size: Optional[int] = None  # side the scorer sees (None: 224 for raw, the dataset's resolution otherwise)
    refine_steps: int = 100  # nette: 0
    refine_lr: float = 6e-4
    refine_linf: float = 10.0
    refine_t_divisor: int = 4  # t ~ uniform{1 .. steps // divisor - 1}: 1..11 (ImageNet-100: 8 -> 1..5)
    refine_model_timestep: str = "respaced"  # upstream gives the DiT the raw respaced index; mapped: the original step
    refine_label: str = "null"  # upstream's live line; class: the commented-out true-label line
    refine_train_mode: bool = True  # model.train(): label dropout, a no-op with the null label


_IMAGENET = {"scorer": IMAGENET_SCORER, "scorer_input": "raw"}


class CaO2(DiTSamplingMethod):
    """`cao2`: candidates from the DiT, a classifier keeps the confident correct ones, their latents are refined."""

    name = "cao2"
    version = 1
    Config = CaO2Config
    source_modules = ("ddbench.methods.cao2", "ddbench.generators.dit")  # the DiT sampler decides the images too
    default_weights = {"digits": DIGITS_DIT_WEIGHTS}
    presets = {
        "imagenet": _IMAGENET,
        "nette": {**_IMAGENET, "candidates_factor": 2, "refine_steps": 0},
        "imagenet100": {**_IMAGENET, "candidates_factor": 2, "most_confident_first": False, "refine_t_divisor": 8},
    }

    def __init__(self, config: CaO2Config | None = None):
        super().__init__(config)
        self.check()  # before the run folder is written: a refused config must not leave a manifest behind

    @property
    def needs_teacher(self) -> bool:  # type: ignore[override]
        """The run's teacher is loaded only when it is the scorer (digits, CIFAR)."""
        return self.config.scorer == TEACHER

    def scorer_size(self, dataset: DatasetSpec) -> int:
        if self.config.scorer_size is not None:
            return self.config.scorer_size
        return 224 if self.config.scorer_input == "raw" else dataset.resolution

    def weights_identity(self, dataset: DatasetSpec) -> dict[str, str]:
        return {**super().weights_identity(dataset), **scorer_identity(self.config.scorer)}

    def manifest_extra(self, task: DistillTask) -> dict[str, Any]:
        config = self.config
        extra = super().manifest_extra(task)
        extra["sampling_seed"] = (f"candidates: (seed, {CANDIDATE_PURPOSE!r}, class, candidate); refinement eps, "
                                  f"timesteps, label dropout: (seed, {REFINE_PURPOSE!r}, class, image)")
        extra["scorer"] = {**scorer_record(config.scorer, task.teacher), "input": config.scorer_input,
                           "size": self.scorer_size(task.dataset)}
        extra["candidates_per_class"] = config.candidates_factor * task.ipc
        extra["refine_timesteps"] = refine_timesteps(config.steps, config.refine_t_divisor) if config.refine_steps else []
        return extra

    def check(self) -> None:
        config = self.config
        if config.candidates_factor < 1 or config.refine_steps < 0 or config.refine_t_divisor < 1:
            raise ConfigError("cao2: candidates_factor and refine_t_divisor must be >= 1, refine_steps >= 0")
        if config.refine_model_timestep not in MODEL_TIMESTEPS:
            raise ConfigError(f"cao2: refine_model_timestep must be one of {', '.join(MODEL_TIMESTEPS)}")
        if config.refine_label not in REFINE_LABELS:
            raise ConfigError(f"cao2: refine_label must be one of {', '.join(REFINE_LABELS)}")
        if config.refine_steps and not refine_timesteps(config.steps, config.refine_t_divisor):
            raise ConfigError(f"cao2: no refinement timestep in range(1, {config.steps} // {config.refine_t_divisor}); "
                              "use more steps, a smaller refine_t_divisor or refine_steps=0")

    def prepare(self, task: DistillTask) -> None:
        self.check()
        super().prepare(task)
        self.scorer = load_scorer(self.config.scorer, task.dataset, task.teacher, self.class_map.labels, task.device,
                                  task.progress)
        task.progress.log(f"cao2: scorer {self.scorer.record.get('scorer')} ({self.config.scorer_input} input)")

    # ----- the three stages of one class -----
    def candidates(self, task: DistillTask, class_index: int, count: int) -> torch.Tensor:
        """(count, C, h, w) clean latents, candidate j from (seed, CANDIDATE_PURPOSE, class, j)."""
        chunks = []
        label = self.class_map[class_index]
        for start in range(0, count, self.config.batch_size):
            indices = range(start, min(count, start + self.config.batch_size))
            generators = [task.generator(CANDIDATE_PURPOSE, class_index, j, device=task.device) for j in indices]
            labels = torch.full((len(generators),), label, dtype=torch.long)
            chunks.append(self.sampler.sample_latents(labels, generators))
        return torch.cat(chunks)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.codec.decode(chunk) for chunk in latents.split(self.config.batch_size)])

    def select(self, task: DistillTask, class_index: int, decoded: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """(chosen candidate indices, their softmax rows)."""
        inputs = prepare_input(decoded, self.scorer, self.config.scorer_input, self.scorer_size(task.dataset))
        probabilities = softmax_scores(self.scorer.model, inputs, self.config.batch_size)
        chosen = select_candidates(probabilities, self.scorer.labels[class_index], task.ipc,
                                   self.config.most_confident_first)
        return chosen, probabilities

    def refine(self, task: DistillTask, class_index: int, x0: torch.Tensor) -> torch.Tensor:
        config = self.config
        if config.refine_steps == 0:
            return x0
        options = RefineOptions(steps=config.refine_steps, lr=config.refine_lr, linf_weight=config.refine_linf,
                                model_timestep=config.refine_model_timestep, label=config.refine_label,
                                train_mode=config.refine_train_mode)
        choices = refine_timesteps(config.steps, config.refine_t_divisor)
        label = self.model.num_classes if config.refine_label == "null" else self.class_map[class_index]
        refined = []
        for start in range(0, len(x0), config.batch_size):
            batch = x0[start:start + config.batch_size]
            generators = [task.generator(REFINE_PURPOSE, class_index, i) for i in range(start, start + len(batch))]
            noise = torch.stack([torch.randn(batch.shape[1:], generator=g) for g in generators]).to(batch.device)
            timesteps = per_image_timesteps(generators, choices, config.refine_steps)
            labels = torch.full((len(batch),), label, dtype=torch.long, device=batch.device)
            refined.append(refine_latents(self.model, self.sampler.diffusion, batch, noise, timesteps, labels, options,
                                          generators))
        return torch.cat(refined)

    def distill_class(self, task: DistillTask, class_index: int) -> list[Image.Image]:
        latents = self.candidates(task, class_index, self.config.candidates_factor * task.ipc)
        chosen, _ = self.select(task, class_index, self.decode(latents))
        refined = self.refine(task, class_index, latents[chosen])
        pixels = to_uint8(self.decode(refined))
        return [fit_to_resolution(Image.fromarray(array.numpy()), task.dataset.resolution) for array in pixels]
