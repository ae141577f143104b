"""A process that writes results rows as fast as it can: `python -m tests.faults.db_writer DB WORKER ROWS START_FILE`.

Rows of worker w have seeds w*ROWS/2 .. w*ROWS/2 + ROWS - 1, so consecutive workers share half
their keys (the same evaluation recorded twice must replace, not duplicate). Every worker waits
for START_FILE to appear, so they all write at once.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ddbench.core.results import ResultRow, ResultsStore


def row(seed: int, worker: int) -> ResultRow:
    return ResultRow(
        run_id="run", configuration="c", label="random", method="random", method_config={}, weights={},
        dataset="digits", dataset_fingerprint="f", resolution=32, ipc=1, distill_seed=0, evaluator="hard_label",
        evaluator_protocol=1, evaluator_config={}, evaluator_config_hash="h", evaluator_label="hard_label",
        student="convnet3", seed=seed, metric="top1_final", value=float(seed), metrics={"top1_final": float(seed)},
        distilled_path="/x", distilled_hash="d", wall_time_s=0.0, details={"worker": worker},
        versions={"ddbench": "test"}, git_hash=None,
    )


def main(database: str, worker: int, rows: int, start_file: str) -> None:
    with ResultsStore(database) as store:
        while not Path(start_file).exists():
            time.sleep(0.005)
        first = worker * rows // 2
        for seed in range(first, first + rows):
            store.add(row(seed, worker))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
