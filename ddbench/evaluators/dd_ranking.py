"""DD-Ranking's scores as evaluators: each runs the sub-evaluations its score needs with a
student-training protocol (`rded`, `hard_label`) and returns the score, one row per (set,
student, seed) like any evaluator. Definitions: `ddbench.core.dd_ranking`.

- `ars`: the set and a random real subset of the same IPC, each trained with and without
  augmentation under `protocol` (default `rded`: soft labels and CutMix, DD-Ranking's default);
- `lrs`: the set under `hard_label` and under `rded`, the random subset under `rded`, and the
  full-data hard-label accuracy of the student's architecture: the recorded accuracy of the
  teacher when it has the student's architecture (trained on all real training images with hard
  labels), else `full_data_accuracy`.

The random subset is the `random` method's set at the same IPC and `random_seed`, made (or
reused) in the very folder `ddbench run --method random --distill-seed SEED` uses. Every
sub-accuracy is top1_best where the protocol reports it (DD-Ranking keeps each training's best
validation), else top1_final; all of them, with the protocols' resolved configs and recipes,
are in the row's details. Scores on accuracies as fractions (DD-Ranking's paper) are the
metrics `ars` / `lrs`; `*_percent` are its code's numbers (percentages fed into exp()).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ddbench.core import distributed, paths, registry
from ddbench.core.config import config_to_dict
from ddbench.core.dd_ranking import augmentation_robust_score, label_robust_score
from ddbench.core.distilled import MANIFEST_NAME, DistilledSet, read_manifest
from ddbench.core.errors import ConfigError
from ddbench.core.interfaces import EvalResult, EvalTask, Evaluator
from ddbench.evaluators.base import STUDENT_TRAINING_SOURCE, StudentTrainingEvaluator


@dataclass
class ScoreConfig:
    #: the weight w of DD-Ranking's `ars_lambda` / `lrs_lambda`
    weight: float = 0.5
    #: the distillation seed of the random subset (the `random` method's set)
    random_seed: int = 0
    #: `--set`s of each sub-evaluation's protocol, {"rded": {"epochs": "30"}}; the protocol's
    #: dataset preset applies first, as in `ddbench run`
    protocol_set: dict[str, dict[str, str]] = field(default_factory=dict)


def random_subset(dataset, ipc: int, seed: int, task: EvalTask) -> DistilledSet:
    """The `random` method's set of `dataset` at `ipc` and distillation `seed`, from the folder
    `ddbench run --method random` writes (made here when missing, in a single process)."""
    from ddbench.core.pipeline import build_identity, build_plugin, distill

    method = build_plugin(registry.load_method("random"), dataset, {})
    identity = build_identity(method, dataset, ipc, seed)
    folder = paths.runs_dir() / identity.run_id
    complete = (folder / MANIFEST_NAME).is_file() and read_manifest(folder).get("complete")
    if not complete and distributed.is_distributed():  # the writer is a collective step: not inside one rank's job
        raise ConfigError(f"the random subset this score needs ({folder}) is not made yet, and an evaluation under "
                          f"torchrun cannot make it: run `ddbench run --method random --dataset {dataset.name} --ipc {ipc} "
                          f"--distill-seed {seed} --evaluator hard_label` first, or this evaluation in one process")
    return distill(method, dataset, ipc, seed, folder, task.device, None, task.progress, identity)


def _top1(result: EvalResult) -> float:
    return float(result.metrics.get("top1_best", result.metrics["top1_final"]))


class ScoreEvaluator(Evaluator):
    """Runs student-training protocols as sub-evaluations of one (set, student, seed)."""

    Config = ScoreConfig
    source_modules = STUDENT_TRAINING_SOURCE  # its sub-evaluations train students
    #: the protocols the score trains with; a teacher is needed when one of them needs it
    protocols: tuple[str, ...] = ()

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.protocol_classes = {name: registry.load_evaluator(name) for name in self.protocol_names()}
        for name, cls in self.protocol_classes.items():
            if not issubclass(cls, StudentTrainingEvaluator):
                raise ConfigError(f"{self.name}: protocol {name!r} trains no student; use rded or hard_label")
        unknown = sorted(set(self.config.protocol_set) - set(self.protocol_classes))
        if unknown:
            raise ConfigError(f"{self.name}: protocol_set names {unknown}, which this score does not run "
                              f"({', '.join(self.protocol_classes)})")
        self.needs_teacher = any(cls.needs_teacher for cls in self.protocol_classes.values())

    def protocol_names(self) -> tuple[str, ...]:
        return self.protocols

    def check_architectures(self, students: Sequence[str], teachers: Sequence[str]) -> None:
        for cls in self.protocol_classes.values():
            cls().check_architectures(students, teachers)

    def protocol(self, name: str, dataset, **settings: str) -> StudentTrainingEvaluator:
        """Protocol `name` resolved for `dataset`: its defaults, dataset preset, `protocol_set`, `settings`."""
        from ddbench.core.pipeline import build_plugin

        return build_plugin(self.protocol_classes[name], dataset, {**self.config.protocol_set.get(name, {}), **settings})

    def sub_evaluation(self, protocol: StudentTrainingEvaluator, distilled: DistilledSet, task: EvalTask,
                       record: dict[str, Any], name: str) -> float:
        result = protocol.evaluate(distilled, task)
        record[name] = {"protocol": protocol.name, "protocol_version": protocol.protocol_version,
                        "config": config_to_dict(protocol.config), "set": str(distilled.root),
                        "metrics": result.metrics, "recipe": result.details.get("recipe")}
        return _top1(result)


class AugmentationRobustness(ScoreEvaluator):
    """DD-Ranking's ARS: the set and a random subset, with and without augmentation."""

    name = "ars"

    @dataclass
    class Config(ScoreConfig):
        #: the student-training protocol run with augment=true and augment=false
        protocol: str = "rded"

    def protocol_names(self) -> tuple[str, ...]:
        return (self.config.protocol,)

    def evaluate(self, distilled: DistilledSet, task: EvalTask) -> EvalResult:
        dataset, name = task.dataset, self.config.protocol
        subset = random_subset(dataset, distilled.ipc, self.config.random_seed, task)
        record: dict[str, Any] = {}
        accuracies = {}
        for augment in (True, False):
            protocol = self.protocol(name, dataset, augment=str(augment).lower())
            for which, data in (("syn", distilled), ("random", subset)):
                key = f"{which}_{'with' if augment else 'without'}_aug"
                accuracies[key] = self.sub_evaluation(protocol, data, task, record, key)
        order = ("syn_with_aug", "random_with_aug", "syn_without_aug", "random_without_aug")
        fraction, percent = (augmentation_robust_score(*(accuracies[key] for key in order), weight=self.config.weight,
                                                       scale=scale) for scale in ("fraction", "percent"))
        metrics = {"ars": fraction.ars, "with_aug": fraction.with_aug, "without_aug": fraction.without_aug,
                   "ars_percent": percent.ars, **accuracies}
        return EvalResult(metrics=metrics, primary="ars", details={"sub_evaluations": record, "random_subset": str(subset.root)})


class LabelRobustness(ScoreEvaluator):
    """DD-Ranking's HLR, IOR and LRS: the set under hard labels and under the teacher's soft
    labels, a random subset under soft labels, and the full data under hard labels."""

    name = "lrs"
    protocols = ("hard_label", "rded")

    @dataclass
    class Config(ScoreConfig):
        #: top-1 (%) of the student's architecture trained on the full real data with hard
        #: labels; None: the teacher's recorded accuracy, when the teacher has that architecture
        full_data_accuracy: float | None = None

    def evaluate(self, distilled: DistilledSet, task: EvalTask) -> EvalResult:
        dataset, teacher = task.dataset, task.teacher
        full_hard = self.config.full_data_accuracy
        if full_hard is None:
            if teacher is None or teacher.arch != task.student or teacher.accuracy is None:
                raise ConfigError(f"lrs needs the full-data hard-label accuracy of {task.student}: evaluate with a teacher "
                                  f"of that architecture (--teachers {task.student}), whose recorded accuracy is it, or "
                                  "pass --set lrs.full_data_accuracy=TOP1")
            full_hard = float(teacher.accuracy)
        subset = random_subset(dataset, distilled.ipc, self.config.random_seed, task)
        record: dict[str, Any] = {}
        syn_hard = self.sub_evaluation(self.protocol("hard_label", dataset), distilled, task, record, "syn_hard")
        soft = self.protocol("rded", dataset)
        syn_soft = self.sub_evaluation(soft, distilled, task, record, "syn_soft")
        random_soft = self.sub_evaluation(soft, subset, task, record, "random_soft")
        accuracies = (full_hard, syn_hard, syn_soft, random_soft)
        fraction, percent = (label_robust_score(*accuracies, weight=self.config.weight, scale=scale)
                             for scale in ("fraction", "percent"))
        metrics = {"lrs": fraction.lrs, "hlr": fraction.hlr, "ior": fraction.ior, "lrs_percent": percent.lrs,
                   **dict(zip(("full_hard", "syn_hard", "syn_soft", "random_soft"), accuracies))}
        return EvalResult(metrics=metrics, primary="lrs", details={"sub_evaluations": record, "random_subset": str(subset.root)})
