"""The shared part of the DiT-based methods (`dit`, `minimax`, `hieramp-dit`): load a DiT and its codec,
map the dataset's classes to the generator's labels, sample per-image-seeded images, save them.

Every image draws from its own generator, (seed, "dit-sample", class, image), shared by the three
methods, so they are compared on equal seeds and a class-sharded run makes the same images.
Images are made at the generator's resolution and saved at the dataset's (Lanczos, center crop).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional

import torch
from PIL import Image

from ddbench.core.config import NOT_IN_IDENTITY
from ddbench.core.errors import CheckpointError, ConfigError
from ddbench.core.hashing import cached_sha256_file
from ddbench.core.images import fit_to_resolution
from ddbench.core.interfaces import DatasetSpec, DistillTask, Method
from ddbench.core.progress import Progress
from ddbench.generators.dit.codecs import CODECS, SD_VAE_REPOS, load_sd_vae, make_codec, to_uint8
from ddbench.generators.dit.sampling import DiTSampler, SamplingOptions, StepGuidance

SAMPLE_PURPOSE = "dit-sample"


@dataclass
class DiTSamplingConfig:
    """Minimax's sample.py defaults: 50 respaced steps, cfg 4 on 3 channels, the sd-vae-ft-mse decoder."""

    dit_ckpt: Optional[str] = None  # official .pt, diffusers folder or hub id; digits: the shipped weights
    num_heads: Optional[int] = None  # only for checkpoints of a width the release does not have
    vae: str = "mse"  # mse | ema | a hub id or folder of an AutoencoderKL | a fixed codec: pixels, bilinear2x
    steps: int = 50
    cfg: float = 4.0
    # images per forward; never changes which image a seed gives (at most a last-bit rounding of a batched matmul)
    batch_size: int = field(default=10, metadata=NOT_IN_IDENTITY)


def generator_class_indices(dataset: DatasetSpec, num_classes: int) -> list[int]:
    """For each dataset class, the generator's label: the same index when the generator was trained on
    this dataset, the ImageNet-1K index (through the WNID map) for a 1000-class generator."""
    if num_classes == dataset.num_classes:
        return list(range(dataset.num_classes))
    indices = getattr(dataset, "imagenet1k_indices", None)
    if num_classes == 1000 and indices is not None:
        return list(indices)
    raise CheckpointError(f"the DiT checkpoint has {num_classes} classes but {dataset.name} has {dataset.num_classes} "
                          "and no ImageNet-1K index map; pass a checkpoint trained on this dataset")


@dataclass(frozen=True)
class DiTWeights:
    """Where a DiT method's generator comes from for one dataset when no dit_ckpt is given."""

    description: str
    load: Callable[[torch.device, Progress], tuple[Any, Any, dict]]  # (device, progress) -> (DiT, codec, info)
    identity: Callable[[], dict[str, str]]  # {role: sha256}, without loading anything


def checkpoint_identity(source: str) -> str:
    """sha256 of a local checkpoint (a diffusers folder: of its weights file); a hub id stands for itself."""
    from ddbench.generators.dit.loading import DIFFUSERS_WEIGHTS

    path = Path(source).expanduser()
    if path.is_dir():
        folder = path / "transformer" if (path / "transformer").is_dir() else path
        weights = next((folder / name for name in DIFFUSERS_WEIGHTS if (folder / name).is_file()), None)
        if weights is None:
            raise CheckpointError(f"{path} holds none of {', '.join(DIFFUSERS_WEIGHTS)}")
        return cached_sha256_file(weights)
    if path.is_file():
        return cached_sha256_file(path)
    if re.fullmatch(r"[\w.-]+/[\w.-]+(/[\w./-]+)?", source):
        return f"hub:{source}"
    raise CheckpointError(f"DiT checkpoint {source} does not exist; pass a .pt file, a diffusers folder or a hub id")


class DiTSamplingMethod(Method):
    """Sampling-only DiT methods; subclasses declare their weights and may add a step guidance."""

    Config = DiTSamplingConfig
    #: dataset name -> the generator used when no dit_ckpt is given
    default_weights: ClassVar[Mapping[str, DiTWeights]] = {}
    #: hub id of the released weights for ImageNet-indexed datasets when no dit_ckpt is given (None: none)
    release_weights: ClassVar[Optional[str]] = "facebook/DiT-XL-2-256"

    def manifest_extra(self, task: DistillTask) -> dict[str, Any]:
        return {"generator": "dit", "sampling_seed": f"per image: (seed, {SAMPLE_PURPOSE!r}, class, image)"}

    def _codec_identity(self) -> dict[str, str]:
        return {} if self.config.vae in CODECS else {"vae": f"hub:{SD_VAE_REPOS.get(self.config.vae, self.config.vae)}"}

    def _uses_release(self, dataset: DatasetSpec) -> bool:
        if self.release_weights is None or getattr(dataset, "imagenet1k_indices", None) is None:
            raise CheckpointError(self.missing_weights_message(dataset))
        return True

    def weights_identity(self, dataset: DatasetSpec) -> dict[str, str]:
        if self.config.dit_ckpt:
            return {"generator": checkpoint_identity(self.config.dit_ckpt), **self._codec_identity()}
        if dataset.name in self.default_weights:
            return self.default_weights[dataset.name].identity()
        self._uses_release(dataset)
        return {"generator": f"hub:{self.release_weights}", **self._codec_identity()}

    def load_model(self, task: DistillTask):
        """(DiT, codec, info) on the task's device."""
        from ddbench.generators.dit.loading import load_dit

        config, dataset = self.config, task.dataset
        if not config.dit_ckpt and dataset.name in self.default_weights:
            return self.default_weights[dataset.name].load(task.device, task.progress)
        source = config.dit_ckpt or (self._uses_release(dataset) and self.release_weights)
        model = load_dit(source, num_heads=config.num_heads, device=task.device)
        info = {"weights": "given" if config.dit_ckpt else "release", "dit_ckpt": source, "codec": config.vae}
        codec = make_codec(config.vae) if config.vae in CODECS else load_sd_vae(config.vae, task.device)
        return model, codec, info

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
        self.labels = generator_class_indices(task.dataset, self.model.num_classes)
        self.sampler = DiTSampler(self.model, SamplingOptions(steps=self.config.steps, cfg=self.config.cfg))
        task.progress.log(f"{self.name}: generator weights: {self.weights_info.get('weights')}")

    def generate(self, task: DistillTask, class_index: int, image_indices: list[int]) -> list[Image.Image]:
        """Images at the generator's resolution, one per index, each from its own seeded generator."""
        generators = [task.generator(SAMPLE_PURPOSE, class_index, i, device=task.device) for i in image_indices]
        labels = torch.full((len(image_indices),), self.labels[class_index], dtype=torch.long)
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
