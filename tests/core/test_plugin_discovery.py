"""A third-party package adds a method, an evaluator and a CLI subcommand through entry points alone."""

import os
import subprocess
import sys
import textwrap

PLUGIN_CODE = textwrap.dedent('''
    """A third-party ddbench plugin: class-mean images and a nearest-class-mean evaluator."""
    from dataclasses import dataclass

    import numpy as np
    import torch
    from PIL import Image

    from ddbench.core.interfaces import EvalResult, Evaluator, Method


    @dataclass
    class MeanConfig:
        group_size: int = 4


    class GroupMeans(Method):
        name = "group-means"
        Config = MeanConfig

        def distill_class(self, task, class_index):
            train = task.dataset.split("train")
            members = task.dataset.class_indices("train")[class_index]
            order = torch.randperm(len(members), generator=task.generator("groups", class_index)).tolist()
            images = []
            for i in range(task.ipc):
                group = [members[order[(i * self.config.group_size + j) % len(members)]] for j in range(self.config.group_size)]
                pixels = np.mean([np.asarray(train[k][0], dtype=np.float32) for k in group], axis=0)
                images.append(Image.fromarray(pixels.round().astype(np.uint8)))
            return images


    class NearestMean(Evaluator):
        name = "nearest-mean"

        def evaluate(self, distilled, task):
            as_array = lambda image: np.asarray(image, dtype=np.float32).ravel()
            support = distilled.dataset()
            centers = np.stack([
                np.mean([as_array(img) for img, label in support if label == c], axis=0)
                for c in range(task.dataset.num_classes)
            ])
            val = task.dataset.split("val")
            correct = sum(int(np.argmin(((centers - as_array(img)) ** 2).sum(1)) == label) for img, label in val)
            return EvalResult(metrics={"top1": 100.0 * correct / len(val)}, primary="top1")


    import click


    @click.command("toy-hello")
    @click.option("--name", default="world")
    def hello(name):
        """Say hello (a subcommand from a third-party package)."""
        click.echo(f"hello {name} from the toy plugin")
''')

ENTRY_POINTS = textwrap.dedent('''
    [ddbench.methods]
    group-means = toy_ddbench_plugin:GroupMeans

    [ddbench.evaluators]
    nearest-mean = toy_ddbench_plugin:NearestMean

    [ddbench.commands]
    toy-hello = toy_ddbench_plugin:hello
''')


def make_plugin_package(root):
    root.mkdir(parents=True)
    (root / "toy_ddbench_plugin.py").write_text(PLUGIN_CODE)
    dist_info = root / "toy_ddbench_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-ddbench-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)


def ddbench(args, env):
    return subprocess.run([sys.executable, "-m", "ddbench.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def test_third_party_method_and_evaluator_are_listed_and_run(tmp_path, isolated_home):
    make_plugin_package(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site") + os.pathsep + os.environ.get("PYTHONPATH", ""), "COLUMNS": "200"}

    listed = ddbench(["list", "methods"], env)
    assert listed.returncode == 0, listed.stderr
    assert "group-means" in listed.stdout and "toy_ddbench_plugin:GroupMeans" in listed.stdout and "random" in listed.stdout
    assert "nearest-mean" in ddbench(["list", "evaluators"], env).stdout

    ran = ddbench(["run", "--method", "group-means", "--dataset", "digits", "--ipc", "2", "--evaluator", "nearest-mean",
                   "--seeds", "0", "--set", "group_size=3"], env)
    assert ran.returncode == 0, ran.stderr
    board = ddbench(["leaderboard", "--format", "json"], env)
    (record,) = __import__("json").loads(board.stdout)
    assert record["method"] == "group-means" and record["student"] == "resnet18" and record["n"] == 1
    assert record["mean"] > 50.0  # class means of real digits classify far above chance (10%)

    without = {**os.environ, "COLUMNS": "200"}
    assert "group-means" not in ddbench(["list", "methods"], without).stdout


def test_third_party_subcommand_is_added_through_the_commands_entry_point(tmp_path):
    make_plugin_package(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "200"}
    listed = ddbench(["--help"], env)
    assert listed.returncode == 0 and "toy-hello" in listed.stdout and "Say hello" in listed.stdout
    ran = ddbench(["toy-hello", "--name", "ddbench"], env)
    assert ran.returncode == 0 and "hello ddbench from the toy plugin" in ran.stdout


def test_help_list_and_leaderboard_start_without_torch(tmp_path):
    """The CLI imports no plugin and no torch to show help, list plugins or print a leaderboard."""
    probe = textwrap.dedent('''
        import sys
        from click.testing import CliRunner
        from ddbench.cli import main
        for args in (["--help"], ["list", "methods"], ["teacher", "--help"], ["hieramp", "--help"], ["var", "--help"],
                     ["leaderboard", "--results", sys.argv[1]]):
            result = CliRunner().invoke(main, args)
            assert "torch" not in sys.modules, (args, sorted(m for m in sys.modules if m.startswith("ddbench")))
        print("no torch")
    ''')
    from ddbench.core.results import ResultsStore

    ResultsStore(tmp_path / "r.sqlite").close()
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "r.sqlite")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "no torch" in out.stdout, out.stderr
