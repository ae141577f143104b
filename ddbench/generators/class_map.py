"""Which generator label each dataset class is sampled with: one place for every generator method.

A class-conditional generator trained on a dataset's own labels (the shipped digits VAR, a model
fine-tuned with the dataset's classes) has as many classes as the dataset: class i is label i.
A generator trained on ImageNet-1K (the VAR and DiT releases, the class-token VAR fine-tuned from
them) serves any dataset that knows its classes' ImageNet-1K indices (`imagenet1k_indices`, from
the WNIDs: woof, nette, imagenet100, imagenet1k): class i is label `imagenet1k_indices[i]`, as the
HIERAMP and Minimax releases sample ImageWoof (`--classes 155 159 ...`). Anything else is an error
that says which generator would fit. The map goes into the manifest, class by class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ddbench.core.errors import CheckpointError
from ddbench.core.interfaces import DatasetSpec

IMAGENET1K = "imagenet1k"
IMAGENET1K_CLASSES = 1000
DATASET = "dataset"


@dataclass(frozen=True)
class GeneratorClassMap:
    """`labels[i]` is the generator label of dataset class i, in `label_space`."""

    labels: tuple[int, ...]
    label_space: str

    def __getitem__(self, class_index: int) -> int:
        return self.labels[class_index]

    def record(self, class_names: Sequence[str]) -> dict[str, Any]:
        """For the manifest: the label space and the generator class of every dataset class."""
        return {"label_space": self.label_space, "classes": dict(zip(class_names, self.labels))}


def generator_class_map(dataset: DatasetSpec, generator_classes: int, label_space: str | None = None,
                        generator: str = "the generator") -> GeneratorClassMap:
    """The map for a generator with `generator_classes` labels in `label_space` ("imagenet1k" for
    the releases; None: the dataset's own labels when the counts match, ImageNet-1K for 1,000
    classes otherwise)."""
    imagenet = label_space == IMAGENET1K or (label_space is None and generator_classes == IMAGENET1K_CLASSES)
    if imagenet and generator_classes == IMAGENET1K_CLASSES:
        indices = getattr(dataset, "imagenet1k_indices", None)
        if indices is not None:
            return GeneratorClassMap(tuple(int(i) for i in indices), IMAGENET1K)
        if generator_classes != dataset.num_classes:
            raise CheckpointError(
                f"{generator} is an ImageNet-1K generator ({generator_classes} classes), but {dataset.name} "
                f"({dataset.num_classes} classes) has no map from its classes to ImageNet-1K indices; use a "
                f"generator trained on {dataset.name}, or a dataset with `imagenet1k_indices`")
    if generator_classes == dataset.num_classes:
        return GeneratorClassMap(tuple(range(dataset.num_classes)), DATASET)
    raise CheckpointError(
        f"{generator} has {generator_classes} classes but {dataset.name} has {dataset.num_classes} and there is no "
        f"map between them (only ImageNet-1K generators serve datasets with ImageNet-1K indices); pass a generator "
        f"trained on {dataset.name}")
