"""ImageNet and its subsets as class folders named by WNID: `ROOT/train/<wnid>/*`, `ROOT/val/<wnid>/*`.

Class index = position in sorted WNIDs, which for every subset is also the relative ImageNet-1K
index order, so teachers trained elsewhere (and ImageNet-1K heads) line up. Every class list ships
as a data file whose header cites its source: `data/imagenet1k_classes.txt` (ILSVRC-2012, with
names), `woof_classes.txt` and `nette_classes.txt` (fast.ai), `imagenet100_classes.txt` (Tian et
al., "Contrastive Multiview Coding", ECCV 2020, the list RDED and later DD papers use).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable, ClassVar

from ddbench.core.errors import ConfigError, DataError
from ddbench.core.images import ImageFileDataset
from ddbench.core.interfaces import Archive, DatasetSpec
from ddbench.datasets.folders import (
    CLASS_LIST_DIR,
    class_folder_samples,
    read_class_entries,
    read_class_list,
    require_root,
)

FASTAI = "https://s3.amazonaws.com/fast-ai-imageclas"


@lru_cache(maxsize=1)
def imagenet1k_classes() -> dict[str, str]:
    """WNID -> short name, in ImageNet-1K index order."""
    path = CLASS_LIST_DIR / "imagenet1k_classes.txt"
    entries = dict(read_class_entries(path))
    unnamed = [wnid for wnid, name in entries.items() if not name]
    if unnamed:
        raise DataError(f"{path} gives no name for {', '.join(unnamed[:3])}; every line must be wnid<TAB>name")
    return entries


class _WnidFolders(DatasetSpec):
    resolution = 224
    preset_family = "imagenet"
    teacher_recipe = "imagenet-scratch"  # RDED's subset teachers: from scratch (imagenet-finetune: explicit)
    wnids: ClassVar[list[str]]  # any order; sorted on use
    layout = "ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG"

    @property
    def class_names(self) -> list[str]:
        return sorted(self.wnids)

    @property
    def class_labels(self) -> list[str]:
        names = imagenet1k_classes()
        return [names[wnid] for wnid in self.class_names]

    @property
    def imagenet1k_indices(self) -> list[int]:
        """For each class, its index among the 1,000 ImageNet-1K classes (to slice 1K heads)."""
        order = list(imagenet1k_classes())
        return [order.index(wnid) for wnid in self.class_names]

    def __init__(self, root: str | Path | None = None, resolution: int | None = None):
        super().__init__(root, resolution)
        self._samples: dict[str, list[tuple[Path, int]]] = {}  # listing a big tree once per split

    def split(self, name: str, transform: Callable | None = None) -> ImageFileDataset:
        if name not in ("train", "val"):
            raise ConfigError(f"{self.name} has splits 'train' and 'val', not {name!r}")
        if name not in self._samples:
            root = require_root(self.root, self.name, self.layout, self.source)
            self._samples[name] = class_folder_samples(root / name, self.class_names, self.name, self.layout, self.source)
        return ImageFileDataset(self._samples[name], transform)


class ImageWoof(_WnidFolders):
    name = "woof"
    wnids = read_class_list(CLASS_LIST_DIR / "woof_classes.txt")
    source = "the fast.ai imagewoof2 archives (github.com/fastai/imagenette)"
    archives = {
        "default": Archive(f"{FASTAI}/imagewoof2.tgz", checksum="md5:5eaf5bbf4bf16a77c616dc6e8dd5f8e9",
                           filename="imagewoof2.tgz", extracted_dir="imagewoof2"),
        "160px": Archive(f"{FASTAI}/imagewoof2-160.tgz",
                         checksum="sha256:663c22f69c2802d85e2a67103c017e047096702ffddf9149a14011b7002539bf",
                         filename="imagewoof2-160.tgz", extracted_dir="imagewoof2-160"),
    }


class ImageNette(_WnidFolders):
    name = "nette"
    wnids = read_class_list(CLASS_LIST_DIR / "nette_classes.txt")
    source = "the fast.ai imagenette2 archives (github.com/fastai/imagenette)"
    archives = {
        "default": Archive(f"{FASTAI}/imagenette2.tgz", checksum="md5:fe2fc210e6bb7c5664d602c3cd71e612",
                           filename="imagenette2.tgz", extracted_dir="imagenette2"),
        "320px": Archive(f"{FASTAI}/imagenette2-320.tgz", checksum="md5:3df6f0d01a2c9592104656642f5e78a3",
                         filename="imagenette2-320.tgz", extracted_dir="imagenette2-320"),
        "160px": Archive(f"{FASTAI}/imagenette2-160.tgz", checksum="md5:e793b78cc4c9e9a4ccc0c1155377a412",
                         filename="imagenette2-160.tgz", extracted_dir="imagenette2-160"),
    }


class ImageNet100(_WnidFolders):
    name = "imagenet100"
    wnids = read_class_list(CLASS_LIST_DIR / "imagenet100_classes.txt")
    source = "ImageNet-1K (image-net.org), keeping the 100 classes of ddbench/datasets/data/imagenet100_classes.txt"


class ImageNet1K(_WnidFolders):
    name = "imagenet1k"
    teacher_recipe = "imagenet1k"
    wnids = list(imagenet1k_classes())
    source = "image-net.org (ILSVRC-2012), with val/ sorted into class folders"
