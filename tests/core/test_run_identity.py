"""One run identity, built once: the run folder, manifest, resume key, results rows and the
leaderboard grouping all come from it, so a leaderboard cell only ever pools one configuration."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch

from ddbench.core.config import NOT_IN_IDENTITY
from ddbench.core.distilled import DistilledSet
from ddbench.core.errors import ConfigError, DistilledSetError
from ddbench.core.interfaces import DistillTask, Method, Teacher
from ddbench.core.leaderboard import build_tables, to_json
from ddbench.core.pipeline import EvalOptions, TeacherCache, build_identity, build_plugin, distill, evaluate
from ddbench.core.progress import NullProgress
from ddbench.core.results import ResultsStore
from ddbench.evaluators.hard_label import HardLabelEvaluator
from ddbench.evaluators.rded import RdedEvaluator
from ddbench.training import build_seeded_model
from tests.evaluators.synthetic import ColourSquares

CPU = torch.device("cpu")


@dataclass
class PickConfig:
    offset: int = 0  # which training images of each class to take
    note: str = field(default="", metadata=NOT_IN_IDENTITY)  # changes no image


class PickImages(Method):
    """A method with one knob: real images of each class starting at `offset`, shifted by the seed."""

    name = "pick"
    Config = PickConfig

    def distill_class(self, task: DistillTask, class_index: int):
        train = task.dataset.split("train")
        members = task.dataset.class_indices("train")[class_index]
        start = self.config.offset + task.seed
        return [train[i][0] for i in members[start : start + task.ipc]]


class StandInTeachers:
    """A teacher provider with a fixed, seeded model (no training), and its identity."""

    def __call__(self, dataset, arch, device, progress):
        model = build_seeded_model(arch, dataset.num_classes, dataset.resolution, 0, "stand-in")
        return Teacher(model, arch, dataset.name, dataset.num_classes, accuracy=100.0, checkpoint_sha256="f" * 64,
                       source="test stand-in")

    def identify(self, dataset, arch):
        return "f" * 64


def run_job(tmp_path, store, overrides=None, distill_seed=0, evaluator_cls=HardLabelEvaluator, seeds=(0,), force=False):
    dataset = ColourSquares()
    method = build_plugin(PickImages, dataset, overrides or {})
    evaluator = build_plugin(evaluator_cls, dataset, {"epochs": "2"})
    identity = build_identity(method, dataset, ipc=2, seed=distill_seed)
    out = tmp_path / "runs" / identity.run_id
    distilled = distill(method, dataset, 2, distill_seed, out, CPU, None, NullProgress(), identity)
    teachers = TeacherCache(StandInTeachers(), CPU, NullProgress())
    options = EvalOptions(students=["convnet3"], teachers=["convnet3"], seeds=seeds, device="cpu", force=force)
    rows, skipped = evaluate(distilled, dataset, [evaluator], options, store, teachers, NullProgress(), identity)
    return identity, distilled, rows, skipped


def test_two_configurations_give_two_rows_and_a_rerun_or_force_keeps_one_row_per_job(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        for evaluator_cls in (HardLabelEvaluator, RdedEvaluator):
            first, _, rows, _ = run_job(tmp_path, store, evaluator_cls=evaluator_cls)
            assert len(rows) == 1
            _, _, rows, skipped = run_job(tmp_path, store, evaluator_cls=evaluator_cls)
            assert (rows, skipped) == ([], 1)
            _, _, rows, skipped = run_job(tmp_path, store, evaluator_cls=evaluator_cls, force=True)
            assert (len(rows), skipped) == (1, 0)
            second, _, _, _ = run_job(tmp_path, store, {"offset": "3"}, evaluator_cls=evaluator_cls)
            assert second.configuration != first.configuration and second.label == "pick offset=3"
        tables = build_tables(store)
    assert [(t.evaluator, t.rows) for t in tables] == [("hard_label", ["pick", "pick offset=3"]),
                                                      ("rded", ["pick [teacher convnet3]", "pick offset=3 [teacher convnet3]"])]
    assert all(cell.n == 1 for table in tables for cell in table.cells.values())


def test_distill_seeds_of_one_configuration_share_a_row_and_are_counted(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        zero, _, _, _ = run_job(tmp_path, store, distill_seed=0, seeds=(0, 1))
        one, _, _, _ = run_job(tmp_path, store, distill_seed=1, seeds=(0, 1))
        assert zero.configuration == one.configuration and zero.run_id != one.run_id
        (table,) = build_tables(store)
    (cell,) = table.cells.values()
    assert (cell.n, len(cell.eval_seeds), len(cell.distill_seeds)) == (4, 2, 2)


def test_the_effective_recipe_is_stored_with_every_row_and_exported(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        _, _, (row,), _ = run_job(tmp_path, store, evaluator_cls=RdedEvaluator)
        (stored,) = list(store.rows())
        (record,) = json.loads(to_json(build_tables(store)))
    assert stored["evaluator_config"]["lr"] is None  # the config leaves it to the protocol...
    assert stored["recipe"]["lr"] == 1e-3 and stored["recipe"]["batch_size"] == row.recipe["batch_size"]  # ...what ran
    assert stored["recipe"]["epochs"] == 2 and stored["details"]["epoch_losses"]
    assert record["recipe"] == stored["recipe"]


def test_manifest_records_the_final_config_and_a_folder_of_another_identity_is_refused(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        identity, distilled, _, _ = run_job(tmp_path, store, {"offset": "1"})
    manifest = json.loads((distilled.root / "manifest.json").read_text())
    assert manifest["config"] == {"offset": 1, "note": ""} and manifest["identity"]["key"] == identity.key
    assert manifest["identity"]["dataset"]["train_size"] == 96 and manifest["identity"]["label"] == "pick offset=1"
    assert DistilledSet.open(distilled.root).identity == identity
    dataset = ColourSquares()
    other = build_plugin(PickImages, dataset, {"offset": "2"})
    with pytest.raises(DistilledSetError, match="differs in config"):
        distill(other, dataset, 2, 0, distilled.root, CPU, None, NullProgress())


def test_resolution_and_weights_are_part_of_the_identity(tmp_path):
    method = build_plugin(PickImages, ColourSquares(), {})
    default = build_identity(method, ColourSquares(), 2, 0)
    bigger = build_identity(method, ColourSquares(resolution=16), 2, 0)
    assert default.dataset["resolution"] == 8 and bigger.dataset["resolution"] == 16
    assert bigger.configuration != default.configuration
    with_teacher = build_identity(method, ColourSquares(), 2, 0, teacher=StandInTeachers()(ColourSquares(), "convnet3", CPU, None))
    assert with_teacher.weights == {"teacher": "f" * 64} and with_teacher.configuration != default.configuration
    with pytest.raises(ConfigError, match="--resolution must be an integer from 8 to 1024"):
        ColourSquares(resolution=4)


def test_keys_that_change_no_output_are_recorded_but_leave_the_identity_alone(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        plain, _, _, _ = run_job(tmp_path, store)
        noted, distilled, _, skipped = run_job(tmp_path, store, {"note": "with saliency"})
    assert noted.configuration == plain.configuration and noted.label == "pick" and skipped == 1
    assert json.loads((distilled.root / "manifest.json").read_text())["config"]["note"] == ""  # the first run's folder
