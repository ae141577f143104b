"""DD-Ranking's ARS from ddbench's own evaluations: training without augmentation
(`augment=false`), the score from results rows against the `ddranking` package, and end to end on
digits."""

import json

import pytest
import torch

from ddbench.core.dd_ranking import augmentation_robust_score, augmentation_scores_from_store
from ddbench.core.results import ResultRow, ResultsStore
from ddbench.evaluators.base import without_augmentation
from ddbench.training import OptimizerRecipe, TrainingRecipe
from ddbench.training.augment import TrainAugment, normalize
from ddbench.core.seeding import torch_generator

from tests.sweeps.test_dd_ranking import ddranking_augmentation_robust

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def test_without_augmentation_the_student_sees_the_images_as_they_are():
    recipe = TrainingRecipe(epochs=1, batch_size=8, optim=OptimizerRecipe(lr=0.1), crop_scale=(0.08, 1.0), flip=True,
                            shuffle_patch_factor=2, cutmix_prob=1.0)
    plain = without_augmentation(recipe)
    assert plain.cutmix_prob == 0.0 and (plain.epochs, plain.batch_size, plain.optim) == (1, 8, recipe.optim)
    images = torch.randint(0, 256, (8, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    augment = TrainAugment(16, MEAN, STD, crop_scale=tuple(plain.crop_scale), flip=plain.flip,
                           shuffle_patch_factor=plain.shuffle_patch_factor)
    expected = normalize(images.float() / 255, MEAN, STD)
    for seed in range(3):
        assert torch.allclose(augment(images, torch_generator(seed, "test")), expected, atol=1e-5)


def row(method, augment, seed, value, student="convnet3"):
    config = {"epochs": 3, **({} if augment is None else {"augment": augment})}
    return ResultRow(
        run_id=f"digits/{method}", configuration=f"cfg-{method}", label=method, method=method, method_config={},
        weights={}, dataset="digits", dataset_fingerprint="fp", resolution=16, ipc=1, distill_seed=0, evaluator="rded",
        evaluator_protocol=3, evaluator_config=config, evaluator_config_hash=json.dumps(config, sort_keys=True),
        evaluator_label="rded", student=student, seed=seed, metric="top1_final", value=value,
        metrics={"top1_final": value - 1, "top1_best": value}, distilled_path="/x", distilled_hash="h", wall_time_s=1.0,
        teacher="convnet3", teacher_key="sha-t")


def test_ars_from_rows_is_ddranking_s(tmp_path):
    """Means over seeds of top1_best go in; DD-Ranking's own compute_metrics, given the same four
    accuracies, gives the same scores out, on fractions and on percentages."""
    with ResultsStore(tmp_path / "r.sqlite") as store:
        for seed, (syn, rnd, syn_plain, rnd_plain) in enumerate([(46.0, 40.0, 36.0, 33.0), (44.0, 41.0, 34.0, 33.5)]):
            store.add(row("var", None, seed, syn))  # a row from before `augment` existed: augmented
            store.add(row("random", True, seed, rnd))
            store.add(row("var", False, seed, syn_plain))
            store.add(row("random", False, seed, rnd_plain))
        store.add(row("random", False, 0, 10.0, student="resnet18"))  # another student: not pooled
        (scores,) = augmentation_scores_from_store(store, "digits", 1)
    case = (45.0, 40.5, 35.0, 33.25)
    assert (scores.syn_with_aug, scores.random_with_aug, scores.syn_without_aug, scores.random_without_aug) == case
    assert scores.n == {"syn_with_aug": 2, "random_with_aug": 2, "syn_without_aug": 2, "random_without_aug": 2}
    for scale in ("fraction", "percent"):
        theirs = ddranking_augmentation_robust(case, tmp_path, scale)
        ours = scores.scores[scale]
        assert ours.ars == pytest.approx(theirs["augmentation_robust_score_mean"], rel=1e-12)
        assert ours.with_aug == pytest.approx(theirs["with_aug_scores_mean"], rel=1e-12)
        assert ours.without_aug == pytest.approx(theirs["without_aug_scores_mean"], rel=1e-12)


def test_ars_end_to_end_on_digits(cli, tmp_path):
    """var's set and a random subset of the same IPC, each evaluated with and without
    augmentation by ddbench itself; `leaderboard --ddranking` gives DD-Ranking's ARS of them."""
    from ddbench.core.pipeline import RunRequest, run

    results = tmp_path / "r.sqlite"
    for method in ("random", "var"):
        for augment in ("true", "false"):
            run(RunRequest(method=method, dataset="digits", ipc=1, seeds=(0, 1), evaluators=("hard_label",),
                           students=("convnet3",), device="cpu", results_path=results,
                           overrides={"hard_label.epochs": "3", "hard_label.augment": augment}))
    with ResultsStore(results, readonly=True) as store:
        rows = list(store.rows())
    assert len(rows) == 8
    plain = [r for r in rows if r["evaluator_config"]["augment"] is False]
    augmented = [r for r in rows if r["evaluator_config"]["augment"] is True]
    assert len(plain) == len(augmented) == 4
    assert {r["evaluator_config_hash"] for r in plain}.isdisjoint(r["evaluator_config_hash"] for r in augmented)
    assert all(r["recipe"]["crop_scale"] == [1.0, 1.0] and not r["recipe"]["flip"] and r["recipe"]["cutmix_prob"] == 0
               for r in plain)
    assert all(r["recipe"]["crop_scale"] == [0.5, 1.0] and r["recipe"]["flip"] for r in augmented)

    def mean(method, augment):
        values = [r["metrics"]["top1_final"] for r in rows
                  if r["method"] == method and r["evaluator_config"]["augment"] is augment]
        assert len(values) == 2
        return sum(values) / 2

    expected = augmentation_robust_score(mean("var", True), mean("random", True), mean("var", False), mean("random", False))
    records = json.loads(cli("leaderboard", "--ddranking", "--dataset", "digits", "--ipc", "1", "--results", str(results),
                             "--format", "json").output)
    (ars,) = [r for r in records if r["score"] == "ARS"]
    assert ars["label"] == "var" and ars["evaluator"] == "hard_label" and ars["student"] == "convnet3"
    assert ars["ars_fraction"] == pytest.approx(expected.ars) and ars["with_aug_fraction"] == pytest.approx(expected.with_aug)
    assert ars["n"] == {"syn_with_aug": 2, "random_with_aug": 2, "syn_without_aug": 2, "random_without_aug": 2}
    table = cli("leaderboard", "--ddranking", "--dataset", "digits", "--ipc", "1", "--results", str(results))
    assert table.exit_code == 0 and "ARS" in table.output and f"{expected.ars:.4f}" in table.output

    # the `ars` evaluator runs the same four trainings itself, per seed: the same accuracies in,
    # DD-Ranking's per-run score out (its reported ARS is the mean of these over runs)
    made = cli("run", "--method", "var", "--dataset", "digits", "--ipc", "1", "--seeds", "0,1", "--students", "convnet3",
               "--evaluator", "ars", "--set", "ars.protocol=hard_label",
               "--set", 'ars.protocol_set={"hard_label": {"epochs": "3"}}', "--device", "cpu", "--results", str(results))
    assert made.exit_code == 0, made.output
    with ResultsStore(results, readonly=True) as store:
        scored = {r["seed"]: r for r in store.rows(evaluator="ars")}
    assert sorted(scored) == [0, 1] and {r["metric"] for r in scored.values()} == {"ars"}
    for seed, scored_row in scored.items():
        accuracies = []
        for key, method, augment in (("syn_with_aug", "var", True), ("random_with_aug", "random", True),
                                     ("syn_without_aug", "var", False), ("random_without_aug", "random", False)):
            (same,) = [r["metrics"]["top1_final"] for r in rows
                       if r["method"] == method and r["evaluator_config"]["augment"] is augment and r["seed"] == seed]
            assert scored_row["metrics"][key] == same, (seed, key)
            accuracies.append(same)
        assert scored_row["value"] == pytest.approx(augmentation_robust_score(*accuracies).ars, rel=1e-12)
        assert scored_row["metrics"]["ars_percent"] == pytest.approx(
            augmentation_robust_score(*accuracies, scale="percent").ars, rel=1e-12)
