"""The VQ-VAE of a distilled run, and the per-scale token maps of the run's images.

Which VQ-VAE made a run, in order: an explicit `--vqvae PATH` (any set, e.g. real images or another
tool's output), the run's `vqvae_ckpt` config key (its pyramid read from `var_ckpt`), else the
weights ddbench ships for the run's dataset when a VAR-family method made it. Images are resized
to the VQ-VAE's native resolution (Lanczos, centre crop) and encoded coarse to fine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ddbench.analysis.tokens import TokenSet
from ddbench.core import paths
from ddbench.core.distilled import MANIFEST_NAME, DistilledSet, sha256_file
from ddbench.core.errors import CheckpointError, DistilledSetError
from ddbench.core.images import fit_to_resolution, open_rgb
from ddbench.generators.var.vqvae import VQVAE


def _shipped_digits_vqvae(device: torch.device) -> tuple[VQVAE, Path]:
    from ddbench.generators.var.shipped import SHIPPED_VQVAE, load_digits_models, shipped_weights_dir

    _, vqvae = load_digits_models(device)
    return vqvae, shipped_weights_dir() / SHIPPED_VQVAE


#: the VQ-VAEs ddbench ships, by dataset: what a VAR-family run without checkpoint keys used
SHIPPED_VQVAES: dict[str, Callable[[torch.device], tuple[VQVAE, Path]]] = {"digits": _shipped_digits_vqvae}


@dataclass
class RunVQVAE:
    """A loaded VQ-VAE and where it came from (file and SHA-256), recorded with every analysis."""

    model: VQVAE
    source: str
    sha256: str

    @property
    def resolution(self) -> int:
        return self.model.patch_nums[-1] * self.model.config.downsample

    def describe(self) -> dict:
        return {"source": self.source, "sha256": self.sha256, "vocab_size": self.model.config.vocab_size,
                "patch_nums": list(self.model.patch_nums), "resolution": self.resolution}


def open_run(reference: str | Path, class_names: Optional[Sequence[str]] = None) -> DistilledSet:
    """A run folder, or a run id under `$DDBENCH_HOME/runs` (e.g. `digits/hieramp-ipc10-seed0-<hash>`)."""
    folder = Path(reference).expanduser()
    if not folder.is_dir() and (paths.runs_dir() / str(reference)).is_dir():
        folder = paths.runs_dir() / str(reference)
    if not folder.is_dir():
        raise DistilledSetError(f"no distilled run at {reference!r} (neither a folder nor a run id under "
                                f"{paths.runs_dir()}); pass the folder `ddbench run` printed")
    return DistilledSet.open(folder, class_names=class_names)


def _pyramid_of(var_ckpt: str) -> tuple[int, ...]:
    from ddbench.generators.var.loading import infer_var_config, read_state_dict

    state_dict, where = read_state_dict(var_ckpt)
    return infer_var_config(state_dict, where).patch_nums


def run_vqvae(run: DistilledSet, device: torch.device, vqvae_path: Optional[str] = None,
              patch_nums: Optional[Sequence[int]] = None) -> RunVQVAE:
    """The VQ-VAE that tokenises `run` (see the module docstring for the order)."""
    from ddbench.generators.var.loading import load_vqvae

    config = run.manifest.get("config", {}) or {}
    if vqvae_path:
        pyramid = patch_nums or (_pyramid_of(config["var_ckpt"]) if config.get("var_ckpt") else None)
        model, path = load_vqvae(vqvae_path, patch_nums=pyramid, device=device), Path(vqvae_path)
    elif config.get("vqvae_ckpt"):
        if not config.get("var_ckpt"):
            raise CheckpointError(f"{run.root / MANIFEST_NAME} names vqvae_ckpt but no var_ckpt to read the scale "
                                  "pyramid from; pass --vqvae PATH --patch-nums 1,2,...")
        model = load_vqvae(config["vqvae_ckpt"], patch_nums=_pyramid_of(config["var_ckpt"]), device=device)
        path = Path(config["vqvae_ckpt"])
    elif run.manifest.get("extra", {}).get("generator") == "var" and run.manifest.get("dataset") in SHIPPED_VQVAES:
        model, path = SHIPPED_VQVAES[run.manifest["dataset"]](device)
    else:
        raise CheckpointError(f"{run.root} was made by {run.method!r} without a VQ-VAE ddbench knows of; pass "
                              "--vqvae PATH (and --patch-nums 1,2,... unless it is the release's pyramid)")
    return RunVQVAE(model.eval(), str(path), sha256_file(path))


@torch.no_grad()
def tokenise(run: DistilledSet, vqvae: RunVQVAE, device: torch.device, batch_size: int = 64) -> TokenSet:
    """Per-scale token maps of every image of `run`, in the run's sample order."""
    resolution = vqvae.resolution
    per_scale: list[list[np.ndarray]] = [[] for _ in vqvae.model.patch_nums]
    samples = run.samples
    for start in range(0, len(samples), batch_size):
        batch = []
        for path, _ in samples[start:start + batch_size]:
            image = fit_to_resolution(open_rgb(path), resolution)
            batch.append(torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1))
        images = torch.stack(batch).to(device) / 127.5 - 1.0  # (B, 3, H, W) in [-1, 1]
        for scale, indices in enumerate(vqvae.model.image_to_indices(images)):
            per_scale[scale].append(indices.cpu().numpy())
    labels = np.array([label for _, label in samples], dtype=np.int64)
    return TokenSet([np.concatenate(chunks) for chunks in per_scale], labels, tuple(vqvae.model.patch_nums),
                    vqvae.model.config.vocab_size, run.class_names)
