"""`var`, `var-cls` and `hieramp`: one implementation, three rows of the paper's Tables 7 and 9.

- `var`: the plain VAR transformer (no class tokens).
- `var-cls`: the class-token VAR fine-tuned with HIERAMP's loss, sampled without amplification.
- `hieramp`: the same model with coarse-to-fine amplification.
Every image draws its randomness from its own generator, (seed, "hieramp-sample", class, image),
shared by the three methods, so sharded runs reproduce and the methods are compared on equal seeds.
A class's images are sampled `batch_size` at a time with one generator per row, which draws what
the image would draw alone: the batch size changes speed, not which image a seed gives (the same
tokens; decoded pixels agree to float rounding, ~1e-7 on a CPU; bf16 on CUDA rounds more).
Images are made at the VQ-VAE's resolution and saved at the dataset's (Lanczos, center crop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional

import torch
from PIL import Image

from ddbench.core.config import NOT_IN_IDENTITY
from ddbench.core.errors import CheckpointError, ConfigError
from ddbench.core.hashing import cached_sha256_file
from ddbench.core.images import fit_to_resolution
from ddbench.core.interfaces import DistillTask, Method
from ddbench.generators.class_map import GeneratorClassMap, generator_class_map
from ddbench.generators.var.loading import release_var
from ddbench.generators.var.sampling import SamplingOptions, ScaleSampler
from ddbench.generators.var.shipped import DIGITS_VAR
from ddbench.generators.weights import GeneratorWeights
from ddbench.methods.hieramp.amplify import AmplificationPlan, SaliencyRecord
from ddbench.methods.hieramp.digits_weights import DIGITS_CLASS_TOKEN_VAR
from ddbench.methods.hieramp.subset_finetune import finetuned_class_token_var
from ddbench.methods.hieramp.presets import ABLATIONS, SAMPLING_PRESETS

SAMPLE_PURPOSE = "hieramp-sample"
SALIENCY_DIR = "saliency"


@dataclass
class VarConfig:
    """Generator checkpoints (digits: the weights shipped in the package) and sampling settings."""

    var_ckpt: Optional[str] = None  # VAR (var) or fine-tuned class-token VAR (var-cls, hieramp) .pth
    vqvae_ckpt: Optional[str] = None  # the matching multi-scale VQ-VAE .pth
    cfg: float = 4.0  # classifier-free guidance, ramped linearly over the scales
    top_k: int = 900
    top_p: float = 0.95
    # images sampled together (the release's batch); one generator per image, so it changes no image
    batch_size: int = field(default=25, metadata=NOT_IN_IDENTITY)


@dataclass
class VarClsConfig(VarConfig):
    # write per-scale class-token maps + overlays to <run>/saliency/ (the images stay the same)
    save_saliency: bool = field(default=False, metadata=NOT_IN_IDENTITY)
    # block whose class-token attention is saved when not amplifying
    saliency_block: int = field(default=-2, metadata=NOT_IN_IDENTITY)


@dataclass
class HierAmpConfig(VarClsConfig):
    """Released defaults: beta 5 and rho 0.5 on scales 1..N-1, in the second-to-last block, logit bias."""

    beta: tuple[float, ...] = (5.0,)  # 1 value, 3 (coarse, mid, fine) or one per scale
    rho: tuple[float, ...] = (0.5,)  # share of the scale's keys amplified; same forms as beta
    amp_stages: str = "full"  # full, or coarse / mid / fine joined with '+'
    amp_scales: tuple[int, ...] = ()  # explicit scale indices; overrides amp_stages when given
    amp_blocks: tuple[int, ...] = (-2,)  # block indices, negative from the end (-2: 14 of 16)
    amp_mode: str = "logit_bias"  # or post_softmax (the appendix wording)
    ablation: str = ""  # a Table 3/4 row, e.g. t3-5-50-coarse, t4-0.5-5-5 (explicit --set keys still win)


class _VarFamily(Method):
    """Shared loading, seeding and saving; subclasses say whether class tokens are used and how."""

    #: what these methods output is decided by the VAR backbone too (sampling, VQ-VAE decode)
    source_modules = ("ddbench.methods.hieramp", "ddbench.generators.var")

    presets = SAMPLING_PRESETS
    uses_class_tokens = True
    #: dataset name -> the generator used when no var_ckpt/vqvae_ckpt is given
    default_weights: ClassVar[Mapping[str, GeneratorWeights]] = {"digits": DIGITS_CLASS_TOKEN_VAR}

    def sampling_options(self, vocab_size: int) -> SamplingOptions:
        config = self.config
        return SamplingOptions(cfg=config.cfg, top_k=min(config.top_k, vocab_size), top_p=config.top_p)

    def manifest_extra(self, task: DistillTask) -> dict[str, Any]:
        return {"generator": "var", "class_tokens": self.uses_class_tokens,
                "generator_classes": self.class_map(task.dataset).record(task.dataset.class_names),
                "sampling_seed": f"per image: (seed, {SAMPLE_PURPOSE!r}, class, image)"}

    def class_map(self, dataset) -> GeneratorClassMap:
        """Dataset class -> generator label (ddbench.generators.class_map), known before loading."""
        if self._given_checkpoints():
            from ddbench.generators.var.loading import checkpoint_num_classes

            classes, space, what = checkpoint_num_classes(self.config.var_ckpt), None, self.config.var_ckpt
        else:
            weights = self._default_weights(dataset)
            classes, space, what = weights.num_classes, weights.label_space, weights.description
        return generator_class_map(dataset, classes, space, generator=f"{self.name}'s generator ({what})")

    def _given_checkpoints(self) -> bool:
        config = self.config
        if config.var_ckpt or config.vqvae_ckpt:
            if not (config.var_ckpt and config.vqvae_ckpt):
                raise ConfigError(f"{self.name}: pass both var_ckpt and vqvae_ckpt (--set var_ckpt=... vqvae_ckpt=...)")
            for path in (config.var_ckpt, config.vqvae_ckpt):
                if not Path(path).is_file():
                    raise CheckpointError(f"{self.name}: checkpoint {path} does not exist")
            return True
        return False

    def imagenet_weights(self, dataset) -> GeneratorWeights:
        """The generator for a dataset with ImageNet-1K indices: the class-token VAR made for it."""
        return finetuned_class_token_var(dataset, self.name)

    def _default_weights(self, dataset) -> GeneratorWeights:
        weights = self.default_weights.get(dataset.name)
        if weights is None and getattr(dataset, "imagenet1k_indices", None) is not None:
            weights = self.imagenet_weights(dataset)
        if weights is None:
            hint = ("fine-tune one with `ddbench hieramp finetune --from VAR_CKPT --vqvae VQVAE_CKPT --dataset "
                    f"{dataset.name}`, then " if self.uses_class_tokens else "")
            known = ", ".join(sorted(self.default_weights)) or "none"
            raise CheckpointError(f"{self.name} has default generator weights for {known} and for datasets with "
                                  f"ImageNet-1K classes, not {dataset.name!r}; {hint}pass "
                                  "--set var_ckpt=PATH --set vqvae_ckpt=PATH")
        return weights

    def weights_identity(self, dataset) -> dict[str, str]:
        if self._given_checkpoints():
            return {"generator": cached_sha256_file(self.config.var_ckpt), "vqvae": cached_sha256_file(self.config.vqvae_ckpt)}
        return self._default_weights(dataset).identity()

    def load_models(self, task: DistillTask):
        """(transformer, vqvae, info) on the task's device."""
        config, dataset = self.config, task.dataset
        if self._given_checkpoints():
            if self.uses_class_tokens:
                from ddbench.methods.hieramp.model import load_class_token_var

                model, vqvae, _ = load_class_token_var(config.var_ckpt, config.vqvae_ckpt, device=task.device,
                                                       require_class_tokens=True)
            else:
                from ddbench.generators.var.loading import load_var

                model, vqvae = load_var(config.var_ckpt, config.vqvae_ckpt, device=task.device)
            info = {"weights": "given", "var_ckpt": config.var_ckpt, "vqvae_ckpt": config.vqvae_ckpt}
        else:
            model, vqvae, info = self._default_weights(dataset).load(task.device, task.progress)
        expected = self.class_map(dataset)
        actual = generator_class_map(dataset, model.num_classes, expected.label_space, generator=f"{self.name}'s generator")
        if actual != expected:
            raise CheckpointError(f"{self.name}: the loaded generator has {model.num_classes} classes, which maps "
                                  f"{dataset.name}'s classes differently from what its source declares; the file is "
                                  "from another model")
        return model, vqvae, info

    def make_sampler(self, model, vqvae) -> ScaleSampler:
        return ScaleSampler(model, vqvae, self.sampling_options(model.vocab_size))

    def prepare(self, task: DistillTask) -> None:
        self.model, self.vqvae, self.weights_info = self.load_models(task)
        self.generator_labels = self.class_map(task.dataset)
        self.sampler = self.make_sampler(self.model, self.vqvae)
        space = self.generator_labels.label_space
        space = "" if space == "dataset" else f", classes sampled as {space} labels"
        task.progress.log(f"{self.name}: generator weights: {self.weights_info.get('weights')}{space}")

    def batches(self, task: DistillTask) -> list[range]:
        """Image indices 0..ipc-1 in chunks of `batch_size`."""
        size = self.config.batch_size
        if size < 1:
            raise ConfigError(f"{self.name}: batch_size must be at least 1, got {size}")
        return [range(start, min(task.ipc, start + size)) for start in range(0, task.ipc, size)]

    def generate(self, task: DistillTask, class_index: int, image_indices: range) -> list[Image.Image]:
        """Images at the generator's resolution for `image_indices` of one class, one generator each."""
        label = self.generator_labels[class_index]  # the generator's label of this dataset class
        labels = torch.full((len(image_indices),), label, dtype=torch.long, device=task.device)
        generators = [task.generator(SAMPLE_PURPOSE, class_index, i, device=task.device) for i in image_indices]
        images = self.sampler.sample(labels, generators)  # (B, 3, H, W) in [0, 1]
        arrays = images.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(array) for array in arrays]

    def distill_class(self, task: DistillTask, class_index: int) -> list[Image.Image]:
        return [fit_to_resolution(image, task.dataset.resolution)
                for batch in self.batches(task) for image in self.generate(task, class_index, batch)]


class PlainVar(_VarFamily):
    """`var`: plain VAR sampling (the paper's 'VAR without class tokens')."""

    name = "var"
    Config = VarConfig
    uses_class_tokens = False
    default_weights = {"digits": DIGITS_VAR}

    def imagenet_weights(self, dataset) -> GeneratorWeights:
        """The released var_d16: the paper's 'VAR' row samples it with the classes' ImageNet indices."""
        return release_var(16)


class VarCls(_VarFamily):
    """`var-cls`: the fine-tuned class-token VAR, no amplification."""

    name = "var-cls"
    Config = VarClsConfig

    def plan(self, model) -> Optional[AmplificationPlan]:
        return None

    def make_sampler(self, model, vqvae) -> ScaleSampler:
        from ddbench.methods.hieramp.sampler import ClassTokenSampler

        depth = len(model.blocks)
        if not -depth <= self.config.saliency_block < depth:
            raise ConfigError(f"saliency_block {self.config.saliency_block} out of range for depth {depth}")
        return ClassTokenSampler(model, vqvae, self.sampling_options(model.vocab_size), plan=self.plan(model),
                                 saliency_blocks=(self.config.saliency_block % depth,))

    def distill_class(self, task: DistillTask, class_index: int) -> list[Image.Image]:
        if not self.config.save_saliency:
            return super().distill_class(task, class_index)
        from ddbench.methods.hieramp.saliency import save_saliency_maps

        folder = task.writer.root / SALIENCY_DIR / task.dataset.class_names[class_index]
        images = []
        for batch in self.batches(task):
            self.sampler.record = SaliencyRecord()
            for row, (image_index, native) in enumerate(zip(batch, self.generate(task, class_index, batch))):
                conditional = {si: maps[row] for si, maps in self.sampler.record.maps.items()}  # rows < B: cond half
                save_saliency_maps(folder, str(image_index), native, conditional, self.model.patch_nums)
                images.append(fit_to_resolution(native, task.dataset.resolution))
        self.sampler.record = None
        return images


class HierAmp(VarCls):
    """`hieramp`: class tokens + coarse-to-fine amplification (released defaults)."""

    name = "hieramp"
    Config = HierAmpConfig
    ablations = ABLATIONS  # `--set ablation=t3-5-50-coarse`; an explicit --set of a key still wins

    def plan(self, model) -> AmplificationPlan:
        config = self.config
        return AmplificationPlan.resolve(num_scales=len(model.patch_nums), depth=len(model.blocks), beta=config.beta,
                                         rho=config.rho, blocks=config.amp_blocks, stages=config.amp_stages,
                                         scales=config.amp_scales, mode=config.amp_mode)
