"""The VQ-VAE of a distilled run, and the per-scale token maps of the run's images.

Which VQ-VAE tokenises a run: an explicit `--vqvae PATH` (any folder, e.g. real images or another
tool's output), else the one the run's manifest records in its weights identity (`weights.vqvae`,
a SHA-256), found among the files ddbench knows: the run's `vqvae_ckpt`, then the weights table's
VQ-VAEs (shipped in the package, or the release's from the cache or downloaded). Images are resized
to the VQ-VAE's native resolution (Lanczos, centre crop) and encoded coarse to fine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ddbench.analysis.token_usage import TokenSet
from ddbench.core import paths
from ddbench.core.distilled import MANIFEST_NAME, DistilledSet
from ddbench.core.errors import CheckpointError, DistilledSetError
from ddbench.core.hashing import cached_sha256_file
from ddbench.core.images import fit_to_resolution, open_rgb
from ddbench.generators.var.vqvae import VQVAE


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


def _candidates(run: DistilledSet) -> list[tuple[Path, Callable[[torch.device], VQVAE]]]:
    """The VQ-VAE files that may have made `run`, each with its loader."""
    from ddbench.generators.var.loading import load_vqvae

    config = run.manifest.get("config", {}) or {}
    found = []
    if config.get("vqvae_ckpt") and Path(config["vqvae_ckpt"]).is_file():
        pyramid = _pyramid_of(config["var_ckpt"]) if config.get("var_ckpt") else None
        found.append((Path(config["vqvae_ckpt"]),
                      lambda device: load_vqvae(config["vqvae_ckpt"], patch_nums=pyramid, device=device)))
    return found


def run_vqvae(run: DistilledSet, device: torch.device, vqvae_path: Optional[str] = None,
              patch_nums: Optional[Sequence[int]] = None) -> RunVQVAE:
    """The VQ-VAE that tokenises `run` (see the module docstring for the order)."""
    from ddbench.generators.var.loading import load_vqvae

    config = run.manifest.get("config", {}) or {}
    if vqvae_path:
        pyramid = patch_nums or (_pyramid_of(config["var_ckpt"]) if config.get("var_ckpt") else None)
        model = load_vqvae(vqvae_path, patch_nums=pyramid, device=device)
        return RunVQVAE(model.eval(), str(vqvae_path), cached_sha256_file(vqvae_path))
    recorded = (run.manifest.get("weights") or {}).get("vqvae")
    hint = "pass --vqvae PATH (and --patch-nums 1,2,... unless it is the release's pyramid)"
    if not recorded:
        raise CheckpointError(f"{run.root / MANIFEST_NAME} records no VQ-VAE (method {run.method!r}); {hint}")
    candidates = _candidates(run)
    for path, load in candidates:
        if cached_sha256_file(path) == recorded:
            return RunVQVAE(load(device).eval(), str(path), recorded)
    from ddbench.generators import weights as table

    for entry in table.TABLE.values():  # a table VQ-VAE: shipped, or the release's from the cache or downloaded
        if entry.kind == "vqvae" and table.known_sha256(entry) == recorded:
            path = table.resolve_weights(entry, option="--vqvae PATH")
            pyramid = (_pyramid_of(config["var_ckpt"]) if config.get("var_ckpt") else
                       entry.architecture.get("patch_nums"))  # None: the release's pyramid
            return RunVQVAE(load_vqvae(path, patch_nums=pyramid, device=device).eval(), str(path), recorded)
    known = ", ".join(str(path) for path, _ in candidates) or "none"
    raise CheckpointError(f"{run.root} was made with the VQ-VAE of sha256 {recorded[:16]}..., and neither the weights "
                          f"table nor the files ddbench knows have that hash (looked at: {known}); {hint}")


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
