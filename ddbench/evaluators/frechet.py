"""Frechet distances between a distilled set and the real training split of its dataset.

- `fid` (metric `fid`): the standard Frechet Inception Distance (the HIERAMP paper's Table 6):
  pool3 features (2048) of torch-fidelity's Inception-V3, the port of TensorFlow's 2015-12-05 graph
  that published FIDs use, with its TF1-compatible bilinear resize to 299; the distance of the two
  Gaussians is torch-fidelity's `fid_statistics_to_metric`. Weights: the file
  `weights-inception-2015-12-05-6726825d.pth` from `--set fid.inception_weights=PATH`, else the torch
  hub cache (`$TORCH_HOME/hub/checkpoints/`), fetched there when online; offline and absent, the
  error names the file, the URL and the folder.
- `teacher_frechet` (metric `frechet_teacher_distance`): the same distance in the penultimate
  features (the input of the classifier layer) of the dataset's teacher. It is NOT an FID: its
  values compare sets of one dataset under one teacher checkpoint only. On the 16 px embedded
  `digits`, where Inception features mean little, it is the fidelity measure to use.

Both see images at the dataset's resolution: real train images are resized on the short side and
centre-cropped, as distilled images are saved. Neither trains a student nor draws randomness, so the
pipeline runs each once per distilled set (student "-", the first seed). Real-split statistics are
cached in `$DDBENCH_HOME/cache/frechet/`, keyed by the split's fingerprint and the network's weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from ddbench.core import paths
from ddbench.core.distilled import DistilledSet
from ddbench.core.hashing import StableDigest, cached_sha256_file, stable_hash
from ddbench.core.errors import CheckpointError, ConfigError, DataError
from ddbench.core.images import fit_to_resolution
from ddbench.core.interfaces import DatasetSpec, EvalResult, EvalTask, Evaluator
from ddbench.core.seeding import numpy_generator
from ddbench.models.factory import check_archs

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
INCEPTION_SHA256_PREFIX = "6726825d"
EXTRA_HINT = "pip install 'ddbench[analysis]'"

FeatureFn = Callable[[torch.Tensor], torch.Tensor]  # uint8 (B, 3, R, R) -> float (B, D)


def _torch_fidelity():
    try:
        import torch_fidelity  # noqa: F401
        from torch_fidelity import metric_fid
    except ImportError as exc:
        raise ConfigError(f"Frechet distances use torch-fidelity; {EXTRA_HINT}") from exc
    return metric_fid


# ----- statistics -----
class RunningGaussian:
    """Mean and sample covariance (ddof=1, as np.cov) of streamed feature batches, in float64."""

    def __init__(self) -> None:
        self.count, self.total, self.outer = 0, None, None

    def add(self, features: torch.Tensor) -> None:
        batch = features.detach().to("cpu", torch.float64).numpy()
        self.total = batch.sum(0) if self.total is None else self.total + batch.sum(0)
        self.outer = batch.T @ batch if self.outer is None else self.outer + batch.T @ batch
        self.count += len(batch)

    def statistics(self) -> dict[str, np.ndarray]:
        if self.count < 2:
            raise DataError(f"a Frechet distance needs at least 2 images per set, got {self.count}")
        mu = self.total / self.count
        sigma = (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)
        return {"mu": mu, "sigma": sigma}


def frechet_distance(real: dict[str, np.ndarray], fake: dict[str, np.ndarray]) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), torch-fidelity's implementation."""
    metric_fid = _torch_fidelity()
    return float(metric_fid.fid_statistics_to_metric(real, fake, False)[metric_fid.KEY_METRIC_FID])


class _AtResolution(torch.utils.data.Dataset):
    """`dataset[indices]` as uint8 (3, R, R): short side resized (Lanczos), centre crop."""

    def __init__(self, dataset: torch.utils.data.Dataset, indices: np.ndarray, resolution: int) -> None:
        self.dataset, self.indices, self.resolution = dataset, indices, resolution

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> torch.Tensor:
        image = self.dataset[int(self.indices[position])][0]
        return TF.pil_to_tensor(fit_to_resolution(image.convert("RGB"), self.resolution))


def image_statistics(dataset: torch.utils.data.Dataset, indices: np.ndarray, resolution: int,
                     features: FeatureFn, batch_size: int) -> dict[str, np.ndarray]:
    """Gaussian statistics of the features of `dataset[indices]` (PIL images) at `resolution`."""
    gaussian = RunningGaussian()
    workers = min(8, os.cpu_count() or 1) if len(indices) > 5000 else 0  # order is kept: same sums either way
    loader = torch.utils.data.DataLoader(_AtResolution(dataset, indices, resolution), batch_size=batch_size,
                                         num_workers=workers)
    for images in loader:
        gaussian.add(features(images))
    return gaussian.statistics()


def split_fingerprint(dataset: DatasetSpec, split: torch.utils.data.Dataset) -> str:
    """What identifies the real images: the dataset's fingerprint, root, count, labels, and the files'
    names and sizes (file-backed splits) or the pixel bytes (array-backed ones)."""
    digest = StableDigest([dataset.fingerprint(), str(dataset.root), len(split)])
    digest.update(np.asarray(list(getattr(split, "targets", [])), dtype=np.int64).tobytes())
    if hasattr(split, "samples"):
        for path, _ in split.samples:
            digest.update(f"{Path(path).name}:{Path(path).stat().st_size}".encode())
    elif hasattr(split, "images"):
        digest.update(np.ascontiguousarray(split.images).tobytes())
    return digest.hexdigest(16)


# ----- the evaluators -----
@dataclass
class FrechetConfig:
    #: 0: every image of the real train split; N: a seeded random subset of N images
    real_max_images: int = 0
    real_subset_seed: int = 0
    batch_size: int = 50


class FrechetEvaluator(Evaluator):
    """Distilled set vs real train split in the feature space of `feature_network`."""

    metric: ClassVar[str]
    lower_is_better: ClassVar[bool] = True
    needs_student = False
    seeded = False

    def feature_network(self, task: EvalTask) -> tuple[FeatureFn, str, Optional[str]]:
        """(features function, description, weights fingerprint for the cache or None)."""
        raise NotImplementedError

    def real_indices(self, split: torch.utils.data.Dataset) -> np.ndarray:
        count, limit = len(split), self.config.real_max_images
        if limit < 0:
            raise ConfigError(f"{self.name}: real_max_images must be 0 (all) or positive, got {limit}")
        if not limit or limit >= count:
            return np.arange(count)
        return np.sort(numpy_generator(self.config.real_subset_seed, "frechet-real-subset").choice(count, limit, replace=False))

    def real_statistics(self, task: EvalTask, features: FeatureFn, weights_key: Optional[str]) -> tuple[dict, str]:
        """(statistics, 'cached' or 'computed'): loaded from the cache when the same split and weights were seen."""
        dataset = task.dataset
        split = dataset.split("train")
        indices = self.real_indices(split)
        cache = None
        if weights_key is not None:
            key = stable_hash([self.name, weights_key, split_fingerprint(dataset, split), dataset.resolution,
                               indices.tolist() if len(indices) < len(split) else "all"], 16)
            cache = paths.cache_dir("frechet") / dataset.name / f"{self.name}-{key}.npz"
            if cache.is_file():
                with np.load(cache) as stored:
                    return {"mu": stored["mu"], "sigma": stored["sigma"]}, "cached"
        statistics = image_statistics(split, indices, dataset.resolution, features, self.config.batch_size)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_name(cache.name + ".tmp.npz")
            np.savez(partial, **statistics)
            os.replace(partial, cache)
        return statistics, "computed"

    def evaluate(self, distilled: DistilledSet, task: EvalTask) -> EvalResult:
        features, description, weights_key = self.feature_network(task)
        fake = image_statistics(distilled.dataset(), np.arange(len(distilled.samples)), task.dataset.resolution,
                                features, self.config.batch_size)
        real, origin = self.real_statistics(task, features, weights_key)
        value = frechet_distance(real, fake)
        details = {"features": description, "real_statistics": origin, "distilled_images": len(distilled.samples),
                   "weights": weights_key}
        return EvalResult(metrics={self.metric: value}, primary=self.metric, details=details)


@dataclass
class FIDConfig(FrechetConfig):
    #: the Inception weights file; empty: the standard file in the torch hub cache
    inception_weights: str = ""
    #: refuse weights whose SHA-256 is not the standard file's (their numbers are not FIDs)
    require_standard_weights: bool = True
    #: fetch the standard file into the torch hub cache when it is missing
    download: bool = True


def inception_cache_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def resolve_inception_weights(config: FIDConfig) -> tuple[Path, str]:
    """(path, sha256) of the Inception weights: the given file, else the hub cache (downloaded if allowed)."""
    where = (f"download {INCEPTION_URL} and put it at {inception_cache_path()} (the torch hub cache; $TORCH_HOME "
             "moves it), or pass --set fid.inception_weights=PATH")
    if config.inception_weights:
        path = Path(config.inception_weights).expanduser()
        if not path.is_file():
            raise CheckpointError(f"fid.inception_weights {path} does not exist; {where}")
    else:
        path = inception_cache_path()
        if not path.is_file():
            if not config.download:
                raise CheckpointError(f"FID needs the standard Inception-V3 weights {INCEPTION_FILE}: {where}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(INCEPTION_URL, str(path), hash_prefix=INCEPTION_SHA256_PREFIX, progress=False)
            except Exception as exc:  # offline, proxy, wrong file: one line that says what to do
                raise CheckpointError(f"FID needs the standard Inception-V3 weights {INCEPTION_FILE} and could not fetch "
                                      f"them ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); {where}") from exc
    sha256 = cached_sha256_file(path)
    if config.require_standard_weights and not sha256.startswith(INCEPTION_SHA256_PREFIX):
        raise CheckpointError(f"{path} is not the standard {INCEPTION_FILE} (sha256 {sha256[:16]}..., expected "
                              f"{INCEPTION_SHA256_PREFIX}...): its distances would not be FIDs; {where}, or pass "
                              "--set fid.require_standard_weights=false to use it anyway")
    return path, sha256


class InceptionFID(FrechetEvaluator):
    """`fid`: Frechet Inception Distance to the real train split (lower is better)."""

    name = "fid"
    metric = "fid"
    Config = FIDConfig

    def feature_network(self, task: EvalTask) -> tuple[FeatureFn, str, Optional[str]]:
        _torch_fidelity()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path, sha256 = resolve_inception_weights(self.config)
        try:
            network = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
        except Exception as exc:
            raise CheckpointError(f"{path} is not an Inception-V3 state dict in torch-fidelity's layout ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''}); use {INCEPTION_FILE} from {INCEPTION_URL}") from exc
        network = network.to(task.device)

        @torch.no_grad()
        def features(images: torch.Tensor) -> torch.Tensor:
            return network(images.to(task.device))[0]

        return features, f"Inception-V3 pool3 (torch-fidelity, {path.name}, sha256 {sha256[:12]})", sha256


def classifier_layer(model: nn.Module) -> nn.Module:
    """The layer that maps features to logits: timm's `get_classifier()`, else the last Linear."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(model).__name__} has no Linear classifier layer to read penultimate features from")
    return linears[-1]


class TeacherFrechet(FrechetEvaluator):
    """`teacher_frechet`: Frechet distance in the teacher's penultimate features (not FID; lower is better)."""

    name = "teacher_frechet"
    metric = "frechet_teacher_distance"
    Config = FrechetConfig
    needs_teacher = True
    source_modules = ("ddbench.evaluators", "ddbench.models")  # the teacher's features are the model code's

    def check_architectures(self, students: Sequence[str], teachers: Sequence[str]) -> None:
        check_archs(teachers, "teacher architecture (--teachers)")

    def feature_network(self, task: EvalTask) -> tuple[FeatureFn, str, Optional[str]]:
        teacher = task.teacher
        if teacher is None:
            raise ConfigError(f"{self.name} reads the teacher's features; it needs a teacher (--teachers ARCH)")
        model = teacher.model.to(task.device).eval()
        head = classifier_layer(model)
        teacher_mean, teacher_std = teacher.normalization(task.dataset)  # the constants it was trained with
        mean = torch.tensor(teacher_mean, device=task.device).view(1, 3, 1, 1)
        std = torch.tensor(teacher_std, device=task.device).view(1, 3, 1, 1)

        @torch.no_grad()
        def features(images: torch.Tensor) -> torch.Tensor:
            captured = []
            handle = head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
            try:
                model((images.to(task.device).float() / 255.0 - mean) / std)
            finally:
                handle.remove()
            return captured[0].flatten(1)

        description = f"teacher {teacher.arch} penultimate features ({teacher.source or 'no source recorded'})"
        return features, description, teacher.checkpoint_sha256
