"""`d3hr`: D3HR (Zhao et al., ICML 2025; lin-zhao-resoLve/D3HR @ 8ba351d, generation/) on ddbench's DiT.

Per class: encode every training image with the codec (Resize + CenterCrop to the generator's side,
x * 2 - 1, a seeded posterior sample for the SD VAE), DDIM-invert the latents with CFG (ddim.py), take
the per-dimension mean and unbiased variance of the inverted latents at the kept rows, draw candidate
groups of `ipc` latents from N(mu, sigma^2) at row `stats_row` (t = 600), keep the group with the lowest
score (groups.py), and generate each chosen latent with deterministic DDIM from `start_step`.

The release runs diffusers' DiT (`dit_variant = "diffusers"`, see ddbench.generators.dit.model) in
float16 with the VAE of facebook/DiT-XL-2-256 (sd-vae-ft-ema). Every draw here is seeded from the run's
seed: the posterior sample of image k of class c from (seed, "d3hr-encode", c, k), candidate batch b
of class c from (seed, "d3hr-groups", c, b); upstream samples the posterior unseeded and seeds batch b
with b * 12345 for every class. The group budget (upstream 10^4 batches x 10^4 groups = 10^8 per class)
is `groups`; the manifest records what was used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from ddbench.core.config import NOT_IN_IDENTITY
from ddbench.core.errors import ConfigError
from ddbench.core.images import fit_to_resolution
from ddbench.core.interfaces import DistillTask
from ddbench.generators.dit.codecs import to_uint8
from ddbench.generators.dit.model import VARIANTS
from ddbench.generators.dit.sampling_method import DiTSamplingConfig, DiTSamplingMethod
from ddbench.generators.dit.shipped import DIGITS_DIT_WEIGHTS
from ddbench.methods.d3hr import ddim
from ddbench.methods.d3hr.groups import SKEWNESS, batch_sizes, candidate_batches, choose_group, class_statistics

ENCODE_PURPOSE, GROUP_PURPOSE = "d3hr-encode", "d3hr-groups"
#: the release's budget per class: `--m 100000` -> m // 10 = 10,000 batches of 10,000 groups
UPSTREAM_GROUPS, UPSTREAM_GROUPS_PER_BATCH = 100_000_000, 10_000


@dataclass
class D3HRConfig(DiTSamplingConfig):
    """The release's defaults (group_sampling.py, dit_inversion_save_statistic.py); each quirk is the
    default and has a key for the fixed behaviour."""

    vae: str = "ema"  # facebook/DiT-XL-2-256's VAE (the DiTPipeline D3HR loads)
    steps: int = ddim.GRID_STEPS  # the DDIM grid; the release's loops are written for 50
    dit_variant: str = "diffusers"  # the function the release ran; "official": facebookresearch/DiT's
    cfg_all_channels: bool = True  # guide all 4 eps channels (DiTPipeline); False: the official DiT's first 3
    invert_at_target: bool = True  # evaluate the model at the target t during inversion; False: at t - 20
    stats_row: int = 6  # `--i_step`: kept row 6 = t 600
    start_step: int = 18  # `--start_step`: t 620, one step above the statistics (19: t 600)
    last_to_abar1: bool = True  # prev = max(1, t - 20): the last steps end at abar[1]; False: the scheduler's rule
    skewness: str = "per_member"  # upstream; "per_dimension": one skewness per dimension over the members
    images_per_class: int = 0  # 0: every training image of the class (the release); N: the first N in split order
    groups: int = UPSTREAM_GROUPS  # candidate groups per class
    groups_per_batch: int = UPSTREAM_GROUPS_PER_BATCH  # candidates per seeded batch (decides the draws)
    # images per encode / inversion / generation forward; never changes a draw
    batch_size: int = field(default=50, metadata=NOT_IN_IDENTITY)


def prepare_image(image: Image.Image, side: int) -> torch.Tensor:
    """The release's transform at `side` px (Resize, CenterCrop, ToTensor), then x * 2 - 1: (3, side, side)."""
    from torchvision import transforms

    tensor = transforms.Compose([transforms.Resize(side), transforms.CenterCrop(side), transforms.ToTensor()])(image.convert("RGB"))
    return tensor * 2 - 1


def encode(codec, pixels: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """Latents of `pixels` (B, 3, H, W) in [-1, 1]; row k's posterior sample from generators[k] alone."""
    with torch.no_grad():
        return codec.encode(pixels, generator=generators).float()


class D3HR(DiTSamplingMethod):
    """`d3hr`: DDIM inversion, class statistics, group sampling, DDIM generation on the DiT."""

    name = "d3hr"
    version = 1
    Config = D3HRConfig
    source_modules = ("ddbench.methods.d3hr", "ddbench.generators.dit")
    default_weights = {"digits": DIGITS_DIT_WEIGHTS}
    #: 10^5 groups on digits (1 CPU-second per 10^4 groups of 10 x 192 dims): 10^8 would take 3 CPU-hours a class
    presets = {"digits": {"groups": 100_000}}

    def __init__(self, config: D3HRConfig | None = None):
        super().__init__(config)
        self.check_config()

    def check_config(self) -> None:
        config = self.config
        if config.steps != ddim.GRID_STEPS:
            raise ConfigError(f"d3hr: steps must be {ddim.GRID_STEPS} (the release's inversion keeps rows of that grid)")
        if config.dit_variant not in VARIANTS:
            raise ConfigError(f"d3hr: dit_variant must be one of {', '.join(VARIANTS)}, not {config.dit_variant!r}")
        if config.skewness not in SKEWNESS:
            raise ConfigError(f"d3hr: skewness must be one of {', '.join(SKEWNESS)}, not {config.skewness!r}")
        if not 0 <= config.stats_row < len(ddim.KEPT_STEPS):
            raise ConfigError(f"d3hr: stats_row must be in [0, {len(ddim.KEPT_STEPS)})")
        if not 0 <= config.start_step < ddim.GRID_STEPS:
            raise ConfigError(f"d3hr: start_step must be in [0, {ddim.GRID_STEPS})")
        if config.groups < 1 or config.groups_per_batch < 1 or config.batch_size < 1:
            raise ConfigError("d3hr: groups, groups_per_batch and batch_size must be >= 1")
        if config.images_per_class == 1 or config.images_per_class < 0:
            raise ConfigError("d3hr: images_per_class must be 0 (all) or >= 2 (the class variance needs two)")

    def manifest_extra(self, task: DistillTask) -> dict[str, Any]:
        config = self.config
        sizes = batch_sizes(config.groups, config.groups_per_batch)
        return {**super().manifest_extra(task),
                "sampling_seed": f"per image: (seed, {ENCODE_PURPOSE!r}, class, image); per candidate batch: "
                                 f"(seed, {GROUP_PURPOSE!r}, class, batch)",
                "dit_variant": config.dit_variant,
                "group_sampling": {"groups_per_class": sum(sizes), "batches": len(sizes),
                                   "groups_per_batch": config.groups_per_batch, "upstream_groups_per_class": UPSTREAM_GROUPS,
                                   "statistics_timestep": ddim.kept_timesteps()[config.stats_row],
                                   "start_timestep": ddim.leading_timesteps()[config.start_step]}}

    def prepare(self, task: DistillTask) -> None:
        if task.ipc < 2:
            raise ConfigError("d3hr needs ipc >= 2: its group score compares the members' std with the class's")
        super().prepare(task)
        self.model.use_variant(self.config.dit_variant)
        self._train = task.dataset.split("train")
        self._by_class = task.dataset.class_indices("train")

    def _cfg_channels(self):
        return None if self.config.cfg_all_channels else 3

    def class_trajectories(self, task: DistillTask, class_index: int) -> torch.Tensor:
        """(images, rows, D) inverted latents at the kept rows 0 .. `stats_row` of every training image of the
        class (the rows after the statistics' row are never used, so they are not computed)."""
        config, model = self.config, self.model
        side = model.config.input_size * self.codec.downsample
        members, flats = self._by_class[class_index][:config.images_per_class or None], []
        for start in range(0, len(members), config.batch_size):
            chunk = members[start:start + config.batch_size]
            pixels = torch.stack([prepare_image(self._train[i][0], side) for i in chunk]).to(task.device)
            generators = [task.generator(ENCODE_PURPOSE, class_index, start + k, device=task.device) for k in range(len(chunk))]
            latents = encode(self.codec, pixels, generators)
            labels = torch.full((len(chunk),), self.class_map[class_index], dtype=torch.long, device=task.device)
            rows = ddim.invert(model, latents, labels, cfg=config.cfg, cfg_channels=self._cfg_channels(),
                               at_target=config.invert_at_target, last_row=config.stats_row)
            flats.append(rows.permute(1, 0, 2, 3, 4).flatten(2).cpu())
        return torch.cat(flats)

    def distill_class(self, task: DistillTask, class_index: int) -> list[Image.Image]:
        config, model = self.config, self.model
        mean, variance = class_statistics(self.class_trajectories(task, class_index))
        mu, sigma = mean[config.stats_row].to(task.device), variance[config.stats_row].sqrt().to(task.device)
        sizes = batch_sizes(config.groups, config.groups_per_batch)
        batches = candidate_batches(mu, sigma, task.ipc, sizes,
                                    lambda b: task.generator(GROUP_PURPOSE, class_index, b, device=task.device))
        chosen, score, index = choose_group(batches, mu, sigma, config.skewness)
        task.progress.log(f"d3hr: class {class_index}: group {index} of {sum(sizes)} scored {score:.4f}")
        shape = (model.config.in_channels, model.config.input_size, model.config.input_size)
        latents = chosen.view(task.ipc, *shape)
        images = []
        for start in range(0, task.ipc, config.batch_size):
            chunk = latents[start:start + config.batch_size]
            labels = torch.full((chunk.shape[0],), self.class_map[class_index], dtype=torch.long, device=task.device)
            final = ddim.generate(model, chunk, labels, start_step=config.start_step, cfg=config.cfg,
                                  cfg_channels=self._cfg_channels(), last_to_abar1=config.last_to_abar1)
            with torch.no_grad():
                pixels = to_uint8(self.codec.decode(final))
            images += [fit_to_resolution(Image.fromarray(a.numpy()), task.dataset.resolution) for a in pixels]
        return images
