"""CIFAR-10 and CIFAR-100 from `--data-root`, in either on-disk form:

- the official pickled release: `cifar-10-batches-py/` (data_batch_1..5, test_batch) or
  `cifar-100-python/` (train, test), either as the root itself or directly under it;
- a class-folder PNG tree: `train/<class>/*.png` and `test/<class>/*.png`.

Class order is the official label order of the release (CIFAR-10: airplane ... truck; CIFAR-100:
the 100 fine labels in alphabetical order, as in the release's `meta` file), read from
`data/cifar10_classes.txt` and `data/cifar100_classes.txt`, which cite where they were checked. The
official test set is ddbench's `val` split.

The pickles are read with a restricted unpickler that builds only what the official files hold
(dicts, lists, bytes and numpy arrays): a planted pickle that names anything else is refused
instead of run.
"""

from __future__ import annotations

import pickle
import warnings
from functools import cached_property
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np

from ddbench.core.errors import ConfigError, DataError
from ddbench.core.images import ArrayImageDataset, ImageFileDataset
from ddbench.core.interfaces import Archive, DatasetSpec
from ddbench.datasets.folders import CLASS_LIST_DIR, class_folder_samples, read_class_list, require_root

CIFAR10_CLASSES = read_class_list(CLASS_LIST_DIR / "cifar10_classes.txt")
CIFAR100_CLASSES = read_class_list(CLASS_LIST_DIR / "cifar100_classes.txt")


#: (module, name) a CIFAR pickle may reference: numpy's array reconstruction (numpy 1 and 2
#: spellings, pickle protocols 2 to 5) and the codec Python 3 uses for bytes under protocol 2
ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


class _RefusingUnpickler(pickle.Unpickler):
    """Resolves only ALLOWED_GLOBALS; anything else is an UnpicklingError before it can run."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"it references {module}.{name}, which the official CIFAR pickles never do; refusing to load it "
                "(a planted pickle could run code)")
        with warnings.catch_warnings():  # numpy 2 warns about its numpy.core alias
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def load_cifar_pickle(path: Path) -> dict:
    """One batch file of the official release, without running code from it."""
    with open(path, "rb") as handle:
        batch = _RefusingUnpickler(handle, encoding="bytes").load()
    if not isinstance(batch, dict):
        raise pickle.UnpicklingError(f"it holds a {type(batch).__name__}, not the dict of a CIFAR batch")
    return batch


class _Cifar(DatasetSpec):
    resolution = 32
    preset_family = "cifar"
    teacher_recipe = "cifar"
    pickle_dir: ClassVar[str]
    pickle_files: ClassVar[dict[str, list[str]]]
    label_key: ClassVar[bytes]
    classes: ClassVar[list[str]]

    @classmethod
    def data_root_after_fetch(cls, unpacked: Path) -> Path:
        """The pickle folder is found under the root, so the root is the folder above it."""
        return unpacked.parent

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    @property
    def layout(self) -> str:
        return (
            f"ROOT/{self.pickle_dir}/ (the official pickled release) or "
            "ROOT/train/<class>/*.png + ROOT/test/<class>/*.png"
        )

    @cached_property
    def _pickle_root(self) -> Path | None:
        root = require_root(self.root, self.name, self.layout, self.source)
        for candidate in (root / self.pickle_dir, root):
            if all((candidate / f).is_file() for files in self.pickle_files.values() for f in files):
                return candidate
        return None

    def _read_pickles(self, split: str) -> tuple[np.ndarray, list[int]]:
        images, labels = [], []
        for filename in self.pickle_files[split]:
            path = self._pickle_root / filename
            try:
                batch = load_cifar_pickle(path)
                data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                labels.extend(int(label) for label in batch[self.label_key])
            except (pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError, AttributeError) as exc:
                raise DataError(f"cannot read CIFAR batch {path}: {exc}; download the archive again") from exc
            images.append(data.transpose(0, 2, 3, 1))
        return np.concatenate(images), labels

    def split(self, name: str, transform: Callable | None = None):
        if name not in ("train", "val"):
            raise ConfigError(f"{self.name} has splits 'train' and 'val' (the official test set), not {name!r}")
        if self._pickle_root is not None:
            images, labels = self._read_pickles(name)
            return ArrayImageDataset(images, labels, transform)
        folder = self.root / ("train" if name == "train" else "test")
        samples = class_folder_samples(folder, self.class_names, self.name, self.layout, self.source)
        return ImageFileDataset(samples, transform)


class Cifar10(_Cifar):
    name = "cifar10"
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    classes = CIFAR10_CLASSES
    pickle_dir = "cifar-10-batches-py"
    pickle_files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "val": ["test_batch"]}
    label_key = b"labels"
    source = "https://www.cs.toronto.edu/~kriz/cifar.html"
    archives = {
        "default": Archive(
            url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            checksum="md5:c58f30108f718f92721af3b95e74349a",
            filename="cifar-10-python.tar.gz",
            extracted_dir="cifar-10-batches-py",
        )
    }


class Cifar100(_Cifar):
    name = "cifar100"
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    classes = CIFAR100_CLASSES
    pickle_dir = "cifar-100-python"
    pickle_files = {"train": ["train"], "val": ["test"]}
    label_key = b"fine_labels"
    source = "https://www.cs.toronto.edu/~kriz/cifar.html"
    archives = {
        "default": Archive(
            url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            checksum="md5:eb9058c3a382ffc7106e4002c42a8d85",
            filename="cifar-100-python.tar.gz",
            extracted_dir="cifar-100-python",
        )
    }
