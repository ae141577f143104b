"""`ddbench teacher`: wired into the CLI, lists an empty cache, rejects recipe typos."""

from __future__ import annotations

from click.testing import CliRunner

from ddbench.cli import main


def test_teacher_ls_on_empty_cache(isolated_home):
    result = CliRunner().invoke(main, ["teacher", "ls"])
    assert result.exit_code == 0 and "no cached teachers" in result.output


def test_teacher_train_rejects_unknown_recipe_key():
    result = CliRunner().invoke(main, ["teacher", "train", "--dataset", "digits", "--arch", "resnet18", "--set", "lrr=1"])
    assert result.exit_code != 0
    assert "did you mean 'lr'" in result.output


def test_teacher_train_rejects_unknown_recipe_names():
    result = CliRunner().invoke(main, ["teacher", "train", "--dataset", "digits", "--recipe", "imagenet-scratc"])
    assert result.exit_code != 0
    assert "did you mean 'imagenet-scratch'" in result.output


def test_run_and_eval_take_teacher_recipe_and_class_order_options():
    for command in ("run", "eval"):
        help_text = CliRunner().invoke(main, [command, "--help"]).output
        assert "--teacher-recipe" in help_text and "--teacher-class-order" in help_text
