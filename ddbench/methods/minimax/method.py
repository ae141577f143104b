"""`dit` and `minimax`: the same sampling (Minimax's sample.py), without and with the Minimax fine-tune.

- `dit`: the base DiT (digits: the shipped small DiT; ImageNet subsets: the released DiT-XL/2 from the
  weights table, through the WNID -> ImageNet-1K class map; otherwise `--set dit_ckpt=...`). The ablation row.
- `minimax`: the Minimax-fine-tuned EMA weights (digits: shipped; elsewhere the output of
  `ddbench minimax finetune`, since the release links no fine-tuned checkpoint).
"""

from __future__ import annotations

from ddbench.core.interfaces import DatasetSpec
from ddbench.generators.dit.sampling_method import DiTSamplingMethod
from ddbench.generators.dit.shipped import DIGITS_DIT_WEIGHTS
from ddbench.methods.minimax.digits import DIGITS_MINIMAX_WEIGHTS


class PlainDiT(DiTSamplingMethod):
    """`dit`: class-conditional DiT sampling without the Minimax fine-tune."""

    name = "dit"
    source_modules = ("ddbench.methods.minimax", "ddbench.generators.dit")  # the DiT sampler decides the images too
    default_weights = {"digits": DIGITS_DIT_WEIGHTS}


class Minimax(DiTSamplingMethod):
    """`minimax`: the DiT after Minimax fine-tuning (representativeness + diversity), sampled the same way."""

    name = "minimax"
    source_modules = ("ddbench.methods.minimax", "ddbench.generators.dit")  # the DiT sampler decides the images too
    uses_release = False  # the release links no fine-tuned checkpoint (MinimaxDiffusion issue #14)
    default_weights = {"digits": DIGITS_MINIMAX_WEIGHTS}

    def missing_weights_message(self, dataset: DatasetSpec) -> str:
        return (f"minimax needs fine-tuned weights for {dataset.name!r} (none are released): run `ddbench minimax "
                f"finetune --dataset {dataset.name} --data-root DATA` (from DiT-XL/2), then pass "
                "--set dit_ckpt=OUT/minimax_ema.pt")
