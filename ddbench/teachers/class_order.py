"""Which class each classifier row of an external teacher means, and putting the rows in ddbench's order.

A teacher file does not say which class its output i is. RDED's released teachers
(`{subset}_{arch}.pth`) were trained on ImageFolder trees whose folders sort like the WNIDs, so
their rows follow the sorted WNIDs, which is ddbench's own order (`sorted`). Minimax and
DD-Ranking train ImageWoof with an unsorted list (`minimax-woof`, their `misc/class_woof.txt`:
ImageNet-1K indices 193, 182, 258, 162, 155, 167, 159, 273, 207, 229). A teacher loaded with the
wrong order is near chance; the store's accuracy check stops it and names the other orders' scores.

An order is given as:
- `sorted`: the checkpoint's rows are already in ddbench's order (the default);
- a name from `NAMED_ORDERS`;
- `imagenet:193,182,...`: row i is the class with that ImageNet-1K index;
- `classes:n02096294,n02093754,...` or a text file: row i is that class (WNID / class name), one per line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from ddbench.core.errors import CheckpointError, ConfigError
from ddbench.core.interfaces import DatasetSpec

SORTED = "sorted"
#: orders other projects train with, as ImageNet-1K indices of row 0, 1, ... (source in the comment)
NAMED_ORDERS: dict[str, tuple[int, ...]] = {
    # MinimaxDiffusion misc/class_woof.txt, also DD-Ranking's ImageWoof order
    "minimax-woof": (193, 182, 258, 162, 155, 167, 159, 273, 207, 229),
}


def _imagenet_indices(dataset: DatasetSpec, spec: str) -> list[int]:
    indices = getattr(dataset, "imagenet1k_indices", None)
    if indices is None:
        raise ConfigError(f"class order {spec!r} names ImageNet-1K classes, but {dataset.name} has no ImageNet-1K "
                          "class map; give the order as classes:NAME,NAME,... or a file of class names")
    return list(indices)


def rows_in_dataset_order(spec: str | os.PathLike | None, dataset: DatasetSpec) -> list[int] | None:
    """For each dataset class i, the checkpoint row that holds it; None for `sorted` (nothing to do)."""
    if spec is None or str(spec) == SORTED:
        return None
    text = str(spec)
    if text in NAMED_ORDERS or text.startswith("imagenet:"):
        wanted = NAMED_ORDERS.get(text) or [int(item) for item in text.partition(":")[2].split(",") if item.strip()]
        keys, rows = _imagenet_indices(dataset, text), list(wanted)
    elif text.startswith("classes:"):
        keys, rows = list(dataset.class_names), [item.strip() for item in text.partition(":")[2].split(",") if item.strip()]
    elif Path(text).expanduser().is_file():
        lines = Path(text).expanduser().read_text().splitlines()
        keys, rows = list(dataset.class_names), [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]
    else:
        raise ConfigError(f"teacher class order {text!r}: use {SORTED}, one of {', '.join(NAMED_ORDERS)}, "
                          "imagenet:I,J,..., classes:NAME,NAME,... or a file with one class per line")
    if sorted(map(str, rows)) != sorted(map(str, keys)):
        missing = [k for k in keys if k not in rows][:3]
        raise ConfigError(f"teacher class order {text!r} does not list exactly {dataset.name}'s {len(keys)} classes "
                          f"(e.g. missing {missing or 'none'}, {len(rows)} given)")
    return [rows.index(key) for key in keys]


def classifier_keys(state: dict[str, torch.Tensor], num_classes: int) -> tuple[str, str | None]:
    """(weight key, bias key or None) of the one 2-D weight with `num_classes` rows: the classifier."""
    candidates = [key for key, value in state.items()
                  if key.endswith("weight") and value.ndim == 2 and value.shape[0] == num_classes]
    if len(candidates) != 1:
        raise CheckpointError(f"cannot tell the classifier of this checkpoint ({len(candidates)} weights with "
                              f"{num_classes} rows: {candidates[:4]}); pass it without a class order")
    weight = candidates[0]
    bias = weight[: -len("weight")] + "bias"
    return weight, bias if bias in state else None


def permute_classifier(state: dict[str, torch.Tensor], rows: Sequence[int]) -> dict[str, torch.Tensor]:
    """A copy of `state` whose classifier row i is the old row `rows[i]`."""
    weight, bias = classifier_keys(state, len(rows))
    index = torch.as_tensor(list(rows), dtype=torch.long)
    permuted = dict(state)
    permuted[weight] = state[weight][index].clone()
    if bias is not None:
        permuted[bias] = state[bias][index].clone()
    return permuted


def candidate_orders(dataset: DatasetSpec) -> list[str]:
    """The orders worth trying when a teacher scores near chance: sorted and the named ones that fit."""
    names = [SORTED]
    for name in NAMED_ORDERS:
        try:
            rows_in_dataset_order(name, dataset)
        except ConfigError:
            continue
        names.append(name)
    return names
