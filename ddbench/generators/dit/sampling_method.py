"""Plain DiT sampling as a `Method` base, shared by the DiT-based methods of two papers (`dit` and `minimax`
in ddbench.methods.minimax, `hieramp-dit` in ddbench.methods.hieramp): load a DiT and its codec, map the
dataset's classes to the generator's labels, sample per-image-seeded images, save them. It lives with
the backbone because a method package never imports another one; nothing here is a paper's addition.

Every image draws from its own generator, (seed, "dit-sample", class, image), shared by the three
methods, so they are compared on equal seeds and a class-sharded run makes the same images.
Images are made at the generator's resolution and saved at the dataset's (Lanczos, center crop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Optional

import torch
from PIL import Image

from ddbench.core.config import NOT_IN_IDENTITY
from ddbench.core.errors import CheckpointError, ConfigError
from ddbench.core.images import fit_to_resolution
from ddbench.core.interfaces import DatasetSpec, DistillTask, Method
from ddbench.generators.class_map import generator_class_map
from ddbench.generators.dit.codecs import CODECS, load_sd_vae, make_codec, to_uint8
from ddbench.generators.dit.loading import checkpoint_identity, codec_identity, release_dit
from ddbench.generators.weights import GeneratorWeights
from ddbench.generators.dit.sampling import DiTSampler, SamplingOptions, StepGuidance

SAMPLE_PURPOSE = "dit-sample"


@dataclass
class DiTSamplingConfig:
    """Minimax's sample.py defaults: 50 respaced steps, cfg 4 on 3 channels, the sd-vae-ft-mse decoder."""

    dit_ckpt: Optional[str] = None  # official .pt, diffusers folder or hub id (default: shipped digits / release)
    num_heads: Optional[int] = None  # only for checkpoints of a width the release does not have
    vae: str = "mse"  # mse | ema | a hub id or folder of an AutoencoderKL | a fixed codec: pixels, bilinear2x
    steps: int = 50
    cfg: float = 4.0
    # images per forward; never changes which image a seed gives (at most a last-bit rounding of a batched matmul)
    batch_size: int = field(default=10, metadata=NOT_IN_IDENTITY)


class DiTSamplingMethod(Method):
    """Sampling-only DiT methods; subclasses declare their weights and may add a step guidance."""

    Config = DiTSamplingConfig
    #: dataset name -> the generator used when no dit_ckpt is given
    default_weights: ClassVar[Mapping[str, GeneratorWeights]] = {}
    #: whether datasets with ImageNet-1K indices default to the released DiT-XL/2 (no: Minimax, none released)
    uses_release: ClassVar[bool] = True

    def source(self, dataset: DatasetSpec) -> Optional[GeneratorWeights]:
        """The default weights for `dataset` (None when dit_ckpt is given); unknown: CheckpointError."""
        if self.config.dit_ckpt:
            return None
        if dataset.name in self.default_weights:
            return self.default_weights[dataset.name]
        if self.uses_release and getattr(dataset, "imagenet1k_indices", None) is not None:
            return release_dit(self.config.vae)
        raise CheckpointError(self.missing_weights_message(dataset))

    def manifest_extra(self, task: DistillTask) -> dict[str, Any]:
        extra = {"generator": "dit", "sampling_seed": f"per image: (seed, {SAMPLE_PURPOSE!r}, class, image)"}
        source = self.source(task.dataset)
        if source is not None:  # known before loading; a given checkpoint's are recorded by `prepare`
            class_map = generator_class_map(task.dataset, source.num_classes, source.label_space,
                                            generator=f"{self.name}'s generator ({source.description})")
            extra["generator_classes"] = class_map.record(task.dataset.class_names)
        return extra

    def weights_identity(self, dataset: DatasetSpec) -> dict[str, str]:
        source = self.source(dataset)
        if source is not None:
            return source.identity()
        return {"generator": checkpoint_identity(self.config.dit_ckpt), **codec_identity(self.config.vae)}

    def load_model(self, task: DistillTask):
        """(DiT, codec, info) on the task's device."""
        source = self.source(task.dataset)
        if source is not None:
            return source.load(task.device, task.progress)
        from ddbench.generators.dit.loading import load_dit

        config = self.config
        model = load_dit(config.dit_ckpt, num_heads=config.num_heads, device=task.device)
        codec = make_codec(config.vae) if config.vae in CODECS else load_sd_vae(config.vae, task.device, progress=task.progress)
        return model, codec, {"weights": "given", "dit_ckpt": config.dit_ckpt, "codec": config.vae}

    def missing_weights_message(self, dataset: DatasetSpec) -> str:
        known = ", ".join(sorted(self.default_weights)) or "none"
        return (f"{self.name} has default DiT weights for {known} and for ImageNet subsets, not {dataset.name!r}; "
                "pass --set dit_ckpt=PATH")

    def guidance(self, batch_size: int) -> Optional[StepGuidance]:
        """A per-step hook for one batch (HIERAMP on DiT); none for plain sampling."""
        return None

    def prepare(self, task: DistillTask) -> None:
        if self.config.batch_size < 1 or self.config.steps < 1:
            raise ConfigError(f"{self.name}: batch_size and steps must be >= 1")
        self.model, self.codec, self.weights_info = self.load_model(task)
        source = self.source(task.dataset)
        self.class_map = generator_class_map(task.dataset, self.model.num_classes, source.label_space if source else None,
                                             generator=f"{self.name}'s generator")
        if source is None:
            task.writer.add_extra({"generator_classes": self.class_map.record(task.dataset.class_names)})
        self.sampler = DiTSampler(self.model, SamplingOptions(steps=self.config.steps, cfg=self.config.cfg))
        task.progress.log(f"{self.name}: generator weights: {self.weights_info.get('weights')}")

    def generate(self, task: DistillTask, class_index: int, image_indices: list[int]) -> list[Image.Image]:
        """Images at the generator's resolution, one per index, each from its own seeded generator."""
        generators = [task.generator(SAMPLE_PURPOSE, class_index, i, device=task.device) for i in image_indices]
        labels = torch.full((len(image_indices),), self.class_map[class_index], dtype=torch.long)
        latents = self.sampler.sample_latents(labels, generators, guidance=self.guidance(len(image_indices)))
        with torch.no_grad():
            pixels = to_uint8(self.codec.decode(latents))
        return [Image.fromarray(array.numpy()) for array in pixels]

    def distill_class(self, task: DistillTask, class_index: int) -> list[Image.Image]:
        images = []
        for start in range(0, task.ipc, self.config.batch_size):
            chunk = list(range(start, min(task.ipc, start + self.config.batch_size)))
            images += [fit_to_resolution(image, task.dataset.resolution) for image in self.generate(task, class_index, chunk)]
        return images
