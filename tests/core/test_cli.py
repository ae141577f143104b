"""The command line end to end on the embedded dataset, and its one-line errors."""

import json

import pytest


def test_run_then_leaderboard_shows_mean_std_over_seeds(cli, tmp_path):
    result = cli("run", "--method", "random", "--dataset", "digits", "--ipc", "2", "--seeds", "0,1,2",
                 "--evaluator", "hard_label", "--set", "epochs=1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "top1_final" in result.output

    board = cli("leaderboard", "--dataset", "digits", "--ipc", "2")
    assert board.exit_code == 0, board.output
    assert "random" in board.output and "(n=3)" in board.output and "±" in board.output

    records = json.loads(cli("leaderboard", "--format", "json").output)
    assert len(records) == 1 and records[0]["n"] == 3 and records[0]["student"] == "resnet18"
    exported = tmp_path / "board.csv"
    assert cli("leaderboard", "--format", "csv", "--output", str(exported)).exit_code == 0
    assert exported.read_text().startswith("dataset,dataset_fingerprint,resolution,ipc,evaluator")

    rerun = cli("run", "--method", "random", "--dataset", "digits", "--ipc", "2", "--seeds", "0,1,2",
                "--evaluator", "hard_label", "--set", "epochs=1", "--device", "cpu")
    assert rerun.exit_code == 0 and "3 evaluation(s) were already in the results database" in rerun.output


def test_eval_of_a_folder_made_elsewhere(cli, tmp_path):
    from PIL import Image

    for digit in range(10):
        folder = tmp_path / "theirs" / str(digit)
        folder.mkdir(parents=True)
        Image.new("RGB", (16, 16), (digit * 20, 0, 0)).save(folder / "a.png")
    result = cli("eval", str(tmp_path / "theirs"), "--dataset", "digits", "--evaluator", "hard_label",
                 "--set", "epochs=1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(cli("leaderboard", "--format", "json").output)
    assert record["method"] == "external"


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--method", "randm", "--dataset", "digits", "--ipc", "1"], "unknown method 'randm'. Did you mean 'random'?"),
        (["run", "--method", "random", "--dataset", "digits", "--ipc", "1000"], "--ipc 1000 is larger than class"),
        (["run", "--method", "random", "--dataset", "woof", "--ipc", "1"], "needs --data-root"),
        (["run", "--method", "random", "--dataset", "digits", "--ipc", "1", "--set", "epoks=1"], "did you mean 'epochs'"),
        (["run", "--method", "random", "--dataset", "digits", "--ipc", "1", "--seeds", "a,b"], "--seeds expects"),
        (["leaderboard", "--results", "/nonexistent/results.sqlite"], "no results database"),
        (["run", "--method", "random", "--dataset", "digits", "--ipc", "1", "--save-saliency"], "has no key 'save_saliency'"),
    ],
)
def test_bad_input_is_one_clear_line(cli, args, message):
    result = cli(*args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_malformed_manifest_through_eval(cli, tmp_path):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "manifest.json").write_text("{oops")
    result = cli("eval", str(tmp_path / "set"))
    assert result.exit_code == 2 and "manifest.json is not valid JSON" in result.output


def test_debug_shows_the_traceback(cli):
    from ddbench.core.errors import ConfigError

    with pytest.raises(ConfigError):
        cli("--debug", "run", "--method", "randm", "--dataset", "digits", "--ipc", "1")


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--students", "resnt18", "unknown student architecture (--students) 'resnt18'. Did you mean 'resnet18'?"),
        ("--teachers", "mobilenetv2", "unknown teacher architecture (--teachers) 'mobilenetv2'. Did you mean 'mobilenet_v2'?"),
        ("--set", "student_init=tim", "student_init 'tim' is not one of timm, torchvision"),
    ],
)
def test_an_unknown_student_or_teacher_stops_before_anything_is_distilled(cli, isolated_home, flag, value, message):
    result = cli("run", "--method", "random", "--dataset", "digits", "--ipc", "1", flag, value, "--device", "cpu")
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (isolated_home / "runs").exists()  # nothing distilled
