"""The digits grid the sweep tests run: two methods (random, var: neither needs a teacher) x two
students x two seeds, hard-label evaluation for one epoch (~15 s a job on 2 CPU cores)."""

from pathlib import Path

DIGITS_GRID = """
name = "digits-test"
datasets = ["digits"]
ipcs = [1]
students = ["convnet3", "convnet4"]
seeds = [0, 1]
evaluators = ["hard_label"]
set = ["hard_label.epochs=1"]

[[methods]]
method = "random"
[[methods]]
method = "var"
"""


def write_grid(folder: Path, text: str = DIGITS_GRID) -> Path:
    path = folder / "grid.toml"
    path.write_text(text)
    return path
