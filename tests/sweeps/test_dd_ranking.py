"""DD-Ranking's scores against the `ddranking` package itself (same accuracies in, same scores
out), and its tensor format: export a distilled set, read it back, `ddbench eval` it."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ddbench.core import registry
from ddbench.core.dd_ranking import (augmentation_robust_score, both_scales, export_tensors, import_tensors,
                                     label_robust_score)
from ddbench.core.distilled import DistilledSet

#: full real data hard-label, distilled hard-label, distilled soft-label, random subset soft-label (top-1 %)
LRS_CASE = (61.0, 31.5, 44.25, 40.0)
#: distilled / random with augmentation, distilled / random without (top-1 %)
ARS_CASE = (45.0, 40.5, 35.0, 33.25)


def ddranking_label_robust(case, tmp_path, scale):
    """Run ddranking's own `LabelRobustScoreSoft.compute_metrics` with its trainings replaced by
    the given accuracies (as fractions or, as its code gives them, percentages)."""
    soft_label = pytest.importorskip("ddranking.metrics.soft_label")
    full, syn_hard, syn_soft, random_soft = [a / 100 if scale == "fraction" else a for a in case]
    random_images = torch.zeros(1)
    scorer = object.__new__(soft_label.LabelRobustScoreSoft)
    scorer.__dict__.update(soft_label_mode="M", ipc=1, num_classes=2, num_eval=1, eval_full_data=True, use_dist=False,
                           rank=0, world_size=1, device="cpu", save_path=str(tmp_path / "lrs.csv"))
    scorer._compute_hard_label_metrics_helper = lambda mode, **kw: ((full if mode == "real" else syn_hard), 0.01)
    scorer._compute_soft_label_metrics_helper = lambda image_tensor, **kw: (
        (random_soft if image_tensor is random_images else syn_soft), 0.01)
    scorer._get_random_data_helper = lambda eval_iter: (None, random_images, None)
    return scorer.compute_metrics(image_tensor=torch.ones(2, 3, 4, 4), syn_lr=0.01)


def ddranking_augmentation_robust(case, tmp_path, scale):
    aug_robust = pytest.importorskip("ddranking.metrics.aug_robust")
    syn_with, random_with, syn_without, random_without = [a / 100 if scale == "fraction" else a for a in case]
    random_images = torch.zeros(1)
    scorer = object.__new__(aug_robust.AugmentationRobustScore)
    scorer.__dict__.update(label_type="hard", soft_label_mode="M", ipc=1, num_classes=2, num_eval=1, use_dist=False,
                           rank=0, world_size=1, device="cpu", save_path=str(tmp_path / "ars.csv"))
    scorer._compute_with_aug_metrics_helper = lambda image_tensor, **kw: (
        (random_with if image_tensor is random_images else syn_with), 0.01)
    scorer._compute_without_aug_metrics_helper = lambda image_tensor, **kw: (
        (random_without if image_tensor is random_images else syn_without), 0.01)
    scorer._get_random_data_helper = lambda eval_iter: (None, random_images, None, None)
    return scorer.compute_metrics(image_tensor=torch.ones(2, 3, 4, 4), syn_lr=0.01)


#: (our function, ddranking run, accuracies, our field -> ddranking's result key)
SCORES = {
    "LRS": (label_robust_score, ddranking_label_robust, LRS_CASE, {
        "hlr": "hard_label_recovery_mean", "ior": "improvement_over_random_mean", "lrs": "label_robust_score_mean"}),
    "ARS": (augmentation_robust_score, ddranking_augmentation_robust, ARS_CASE, {
        "with_aug": "with_aug_scores_mean", "without_aug": "without_aug_scores_mean",
        "ars": "augmentation_robust_score_mean"}),
}


@pytest.mark.parametrize("scale", ["fraction", "percent"])
@pytest.mark.parametrize("score", sorted(SCORES))
def test_scores_are_ddranking_s(tmp_path, score, scale):
    ours_function, theirs_function, case, keys = SCORES[score]
    theirs = theirs_function(case, tmp_path, scale)
    ours = ours_function(*case, scale=scale)
    for field, key in keys.items():
        assert getattr(ours, field) == pytest.approx(theirs[key], rel=1e-12), field


def test_the_two_scales_differ_and_fractions_stay_in_0_1():
    scores = both_scales(label_robust_score, *LRS_CASE)
    fraction, percent = scores["fraction"], scores["percent"]
    a = 0.5 * (44.25 - 40.0) / 100 - 0.5 * (61.0 - 31.5) / 100
    assert fraction.lrs == pytest.approx((math.exp(a) - math.exp(-1)) / (math.e - math.exp(-1)))
    assert 0 <= fraction.lrs <= 1 and percent.lrs < 0  # percentages in exp(): below LRS's own floor
    assert percent.hlr == pytest.approx(100 * fraction.hlr)


@pytest.fixture
def digits_set(cli, isolated_home):
    result = cli("run", "--method", "random", "--dataset", "digits", "--ipc", "2", "--students", "convnet3",
                 "--evaluator", "hard_label", "--set", "epochs=1", "--device", "cpu", "--out", str(isolated_home / "set"))
    assert result.exit_code == 0, result.output
    dataset = registry.create_dataset("digits")
    return DistilledSet.open(isolated_home / "set", class_names=dataset.class_names, dataset="digits"), dataset


def test_export_is_class_major_normalised_and_reads_back_pixel_for_pixel(digits_set, tmp_path):
    distilled, dataset = digits_set
    out = export_tensors(distilled, dataset, tmp_path / "ddr")
    images = torch.load(out / "images.pt")
    assert images.shape == (20, 3, dataset.resolution, dataset.resolution) and images.dtype == torch.float32
    mean = torch.tensor(dataset.mean).view(1, 3, 1, 1)
    std = torch.tensor(dataset.std).view(1, 3, 1, 1)
    first_of_class_3 = sorted(p for p, label in distilled.samples if label == 3)[0]
    expected = torch.from_numpy(np.array(Image.open(first_of_class_3).convert("RGB"))).permute(2, 0, 1) / 255
    assert torch.allclose(images[6] * std[0] + mean[0], expected, atol=1e-6)  # class-major: image 6 = class 3's first

    back = import_tensors(out, dataset, tmp_path / "back")
    reread = DistilledSet.open(back, class_names=dataset.class_names, dataset="digits")
    assert len(reread.samples) == 20 and reread.ipc == 2
    original = {(label, path.name): np.asarray(Image.open(path).convert("RGB")) for path, label in distilled.samples}
    for path, label in reread.samples:
        assert np.array_equal(np.asarray(Image.open(path)), original[(label, path.name)])


def test_ddbench_eval_reads_ddranking_tensors(cli, digits_set, tmp_path):
    distilled, dataset = digits_set
    out = export_tensors(distilled, dataset, tmp_path / "ddr")
    torch.save(torch.softmax(torch.randn(20, 10), 1), out / "labels.pt")
    result = cli("eval", str(out / "images.pt"), "--dataset", "digits", "--students", "convnet3", "--evaluator", "hard_label",
                 "--set", "epochs=1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "convnet3" in result.output and "top1_final" in result.output
    no_dataset = cli("eval", str(out), "--students", "convnet3", "--evaluator", "hard_label")
    assert no_dataset.exit_code == 2 and "DD-Ranking tensors; pass --dataset" in no_dataset.output
    torch.save(torch.zeros(7, 3, 16, 16), tmp_path / "odd.pt")
    odd = cli("eval", str(tmp_path / "odd.pt"), "--dataset", "digits", "--students", "convnet3", "--evaluator", "hard_label")
    assert odd.exit_code == 2 and "multiple of 10 classes" in odd.output


def test_label_robust_scores_from_ddbench_s_own_rows(cli, tmp_path):
    """var's set vs a random subset at the same IPC, hard-label and soft-label (rded) rows; the
    full-data accuracy is the recorded one of the teacher with the student's architecture."""
    import json

    from ddbench.core.interfaces import Teacher
    from ddbench.core.pipeline import RunRequest, run
    from ddbench.core.results import ResultsStore

    def teacher(dataset, arch, device, progress):
        """Nearest class mean of the real training images: informative soft labels, no training."""
        from torchvision import transforms

        train = dataset.split("train", transforms.Compose([transforms.ToTensor(),
                                                           transforms.Normalize(dataset.mean, dataset.std)]))
        sums, counts = torch.zeros(10, 3 * 16 * 16), torch.zeros(10)
        for image, label in train:
            sums[label] += image.flatten()
            counts[label] += 1
        means = sums / counts[:, None]
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10))
        with torch.no_grad():  # -|x - m|^2 / T up to a per-image constant, T = 100
            model[1].weight.copy_(2 * means / 100)
            model[1].bias.copy_(-(means**2).sum(1) / 100)
        return Teacher(model, arch, "digits", 10, accuracy=87.5, checkpoint_sha256="cd" * 32, source="test")

    results = tmp_path / "r.sqlite"
    for method in ("random", "var"):
        run(RunRequest(method=method, dataset="digits", ipc=1, seeds=(0, 1), evaluators=("hard_label", "rded"),
                       students=("convnet3",), teachers=("convnet3",), device="cpu", results_path=results,
                       overrides={"hard_label.epochs": "1", "rded.epochs": "4", "rded.validate_every": "1",
                                  "rded.validate_last_fraction": "1"}), teacher)
    with ResultsStore(results, readonly=True) as store:
        rows = list(store.rows())

    def mean(method, evaluator):
        values = [r["metrics"].get("top1_best", r["metrics"]["top1_final"]) for r in rows
                  if r["method"] == method and r["evaluator"] == evaluator]
        assert len(values) == 2
        return sum(values) / 2

    records = json.loads(cli("leaderboard", "--ddranking", "--dataset", "digits", "--ipc", "1", "--results", str(results),
                             "--format", "json").output)
    assert [r["label"] for r in records] == ["var"] and records[0]["full_hard"] == 87.5
    expected = label_robust_score(87.5, mean("var", "hard_label"), mean("var", "rded"), mean("random", "rded"))
    assert records[0]["lrs_fraction"] == pytest.approx(expected.lrs) and records[0]["hlr_fraction"] == pytest.approx(expected.hlr)
    assert records[0]["n"] == {"syn_hard": 2, "syn_soft": 2, "random_soft": 2}
    table = cli("leaderboard", "--ddranking", "--dataset", "digits", "--ipc", "1", "--results", str(results))
    assert table.exit_code == 0 and "LRS" in table.output
    assert cli("leaderboard", "--ddranking", "--results", str(results)).exit_code == 2  # needs --dataset and --ipc

    # the `lrs` evaluator runs the same sub-evaluations itself, per seed: the same accuracies in,
    # DD-Ranking's per-run score out
    protocol_set = {"hard_label": {"epochs": "1"}, "rded": {"epochs": "4", "validate_every": "1", "validate_last_fraction": "1"}}
    run(RunRequest(method="var", dataset="digits", ipc=1, seeds=(0, 1), evaluators=("lrs",), students=("convnet3",),
                   teachers=("convnet3",), device="cpu", results_path=results,
                   overrides={"lrs.protocol_set": json.dumps(protocol_set)}), teacher)
    with ResultsStore(results, readonly=True) as store:
        scored = {r["seed"]: r for r in store.rows(evaluator="lrs")}
    assert sorted(scored) == [0, 1]
    for seed, scored_row in scored.items():
        def same(method, evaluator):
            (found,) = [r["metrics"].get("top1_best", r["metrics"]["top1_final"]) for r in rows
                        if r["method"] == method and r["evaluator"] == evaluator and r["seed"] == seed]
            return found

        accuracies = (87.5, same("var", "hard_label"), same("var", "rded"), same("random", "rded"))
        assert tuple(scored_row["metrics"][key] for key in ("full_hard", "syn_hard", "syn_soft", "random_soft")) == accuracies
        assert scored_row["value"] == pytest.approx(label_robust_score(*accuracies).lrs, rel=1e-12)
