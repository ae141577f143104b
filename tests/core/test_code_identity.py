"""A method's and an evaluator's code are part of what a result means.

A third-party method is edited between two runs of the same command: the set its old code made is
never reused silently (the run stops and says what to do), `--redistill` makes it again, and the
new rows form a new configuration; a `version` bump is a new configuration by declaration. The
same rule holds for an evaluator's code behind its protocol version. Every evaluation row, resume
state and leaderboard table is named by `EvalIdentity`, through the package's one hash function.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ddbench
from ddbench.core.hashing import stable_hash
from ddbench.core.identity import EvalIdentity, plugin_code

METHOD_CODE = textwrap.dedent('''
    """A third-party method: the first IPC real images of each class, from an offset."""
    from dataclasses import dataclass

    from ddbench.core.interfaces import Method


    @dataclass
    class FirstConfig:
        offset: int = 0


    class FirstImages(Method):
        name = "first-images"
        Config = FirstConfig
        version = 1

        def distill_class(self, task, class_index):
            train = task.dataset.split("train")
            members = task.dataset.class_indices("train")[class_index]
            start = self.config.offset  # SELECTION
            return [train[i][0] for i in members[start:start + task.ipc]]
''')

EVALUATOR_CODE = textwrap.dedent('''
    """A third-party evaluator: nearest class mean in pixel space."""
    import numpy as np

    from ddbench.core.interfaces import EvalResult, Evaluator


    class PixelMeans(Evaluator):
        name = "pixel-means"
        protocol_version = 1

        def evaluate(self, distilled, task):
            as_array = lambda image: np.asarray(image, dtype=np.float32).ravel()
            support = distilled.dataset()
            centers = np.stack([np.mean([as_array(i) for i, label in support if label == c], axis=0)
                                for c in range(task.dataset.num_classes)])
            val = task.dataset.split("val")
            correct = sum(int(np.argmin(((centers - as_array(i)) ** 2).sum(1)) == label) for i, label in val)
            return EvalResult(metrics={"top1": 100.0 * correct / len(val)}, primary="top1")  # METRIC
''')


@pytest.fixture
def plugin(tmp_path, isolated_home):
    """The two plugin modules in a site folder with their distribution's metadata, and a runner."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "code_toy_method.py").write_text(METHOD_CODE)
    (site / "code_toy_eval.py").write_text(EVALUATOR_CODE)
    info = site / "code_toy-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: code-toy\nVersion: 0.3\n")
    (info / "top_level.txt").write_text("code_toy_method\ncode_toy_eval\n")
    (info / "entry_points.txt").write_text("[ddbench.methods]\nfirst-images = code_toy_method:FirstImages\n\n"
                                           "[ddbench.evaluators]\npixel-means = code_toy_eval:PixelMeans\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "COLUMNS": "300"}

    def ddbench_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ddbench.cli", *args], capture_output=True, text=True, env=env,
                              timeout=300)

    def edit(module: str, old: str, new: str) -> None:
        path = site / f"{module}.py"
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))

    return ddbench_cli, edit


RUN = ["run", "--method", "first-images", "--dataset", "digits", "--ipc", "2", "--evaluator", "pixel-means",
       "--seeds", "0"]


def board(ddbench_cli) -> list[dict]:
    shown = ddbench_cli("leaderboard", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_an_edited_method_is_never_reused_silently_and_redistill_makes_a_new_configuration(plugin):
    ddbench_cli, edit = plugin
    first = ddbench_cli(*RUN)
    assert first.returncode == 0, first.stderr
    (before,) = board(ddbench_cli)

    again = ddbench_cli(*RUN)  # unchanged code: the set is reused, said in one line naming the folder
    assert again.returncode == 0, again.stderr
    assert "reusing the complete distilled set in" in one_line(again.stderr)
    assert "already in the results database" in one_line(again.stdout)

    edit("code_toy_method", "start = self.config.offset  # SELECTION", "start = self.config.offset + 3  # SELECTION")
    stopped = ddbench_cli(*RUN)
    message = one_line(stopped.stderr)
    assert stopped.returncode == 2, stopped.stderr
    assert "made by other first-images source" in message and "--redistill" in message and "--keep-set" in message
    assert len(board(ddbench_cli)) == 1  # nothing was evaluated

    remade = ddbench_cli(*RUN, "--redistill")
    assert remade.returncode == 0, remade.stderr
    assert "moved to" in one_line(remade.stderr)
    records = board(ddbench_cli)
    assert len(records) == 2 and len({r["configuration"] for r in records}) == 2
    after = next(r for r in records if r["configuration"] != before["configuration"])
    assert after["mean"] != before["mean"]  # other images: the new rows are what the new code made
    runs = Path(os.environ["DDBENCH_HOME"]) / "runs" / "digits"
    assert len([p for p in runs.iterdir() if ".source-" in p.name]) == 1  # the old set was kept aside

    rerun = ddbench_cli(*RUN)  # the new code's set is now the one reused
    assert rerun.returncode == 0 and "reusing the complete distilled set" in one_line(rerun.stderr)


def test_a_set_that_stopped_before_its_first_class_gives_way_to_the_fixed_code(plugin):
    """Found by the full-size dry run: a method that failed in its first class left a manifest and no
    class; after the fix the same command stopped on 'made by other source' although nothing was lost."""
    ddbench_cli, edit = plugin
    edit("code_toy_method", "start = self.config.offset  # SELECTION", "raise RuntimeError('broken')  # SELECTION")
    failed = ddbench_cli(*RUN)
    assert failed.returncode != 0 and "broken" in failed.stderr
    edit("code_toy_method", "raise RuntimeError('broken')  # SELECTION", "start = self.config.offset  # SELECTION")
    fixed = ddbench_cli(*RUN)
    assert fixed.returncode == 0, fixed.stderr
    assert "moved to" not in one_line(fixed.stderr) and len(board(ddbench_cli)) == 1


def test_keep_set_evaluates_the_old_set_under_its_old_configuration(plugin):
    ddbench_cli, edit = plugin
    assert ddbench_cli(*RUN).returncode == 0
    (before,) = board(ddbench_cli)
    edit("code_toy_method", "start = self.config.offset  # SELECTION", "start = self.config.offset + 3  # SELECTION")
    kept = ddbench_cli(*RUN, "--seeds", "1", "--keep-set")
    assert kept.returncode == 0, kept.stderr
    assert "kept as it is (--keep-set)" in one_line(kept.stderr)
    (record,) = board(ddbench_cli)
    assert record["configuration"] == before["configuration"] and record["n"] == 2


def test_a_version_bump_is_a_new_configuration_in_a_new_folder(plugin):
    ddbench_cli, edit = plugin
    assert ddbench_cli(*RUN).returncode == 0
    edit("code_toy_method", "version = 1", "version = 2")
    bumped = ddbench_cli(*RUN)
    assert bumped.returncode == 0, bumped.stderr  # a declared change stops nothing: it is a new run
    assert "reusing" not in one_line(bumped.stderr)
    records = board(ddbench_cli)
    assert len({r["configuration"] for r in records}) == 2
    folders = list((Path(os.environ["DDBENCH_HOME"]) / "runs" / "digits").iterdir())
    assert len(folders) == 2
    manifests = [json.loads((folder / "manifest.json").read_text())["identity"] for folder in folders]
    assert sorted(m["code"]["version"] for m in manifests) == [1, 2]
    assert {m["code"]["distribution"] for m in manifests} == {"code-toy"}
    assert {m["code"]["distribution_version"] for m in manifests} == {"0.3"}


def test_an_edited_evaluator_stops_until_force_or_keep_results(plugin):
    ddbench_cli, edit = plugin
    assert ddbench_cli(*RUN).returncode == 0
    edit("code_toy_eval", 'primary="top1")  # METRIC', 'primary="top1")  # METRIC, edited')
    stopped = ddbench_cli(*RUN)
    message = one_line(stopped.stderr)
    assert stopped.returncode == 2, stopped.stderr
    assert "made by other pixel-means code" in message and "--force" in message and "--keep-results" in message

    kept = ddbench_cli(*RUN, "--keep-results")
    assert kept.returncode == 0 and "already in the results database" in one_line(kept.stdout)
    assert len(board(ddbench_cli)) == 1

    forced = ddbench_cli(*RUN, "--force")
    assert forced.returncode == 0, forced.stderr
    tables = board(ddbench_cli)  # the same configuration, in two tables: one per evaluator code
    assert len(tables) == 2 and len({t["evaluator_config_hash"] for t in tables}) == 2
    assert len({t["configuration"] for t in tables}) == 1


def test_code_identity_names_the_distribution_and_changes_with_the_source(tmp_path, monkeypatch):
    from ddbench.evaluators.rded import RdedEvaluator
    from ddbench.methods.random import RandomSubset

    code = RandomSubset.code()
    assert (code.distribution, code.distribution_version, code.version) == ("ddbench", ddbench.__version__, 1)
    assert RdedEvaluator.code().version == RdedEvaluator.protocol_version
    module = tmp_path / "edited_plugin.py"
    module.write_text("from ddbench.core.interfaces import Method\nclass M(Method):\n    name = 'm'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import edited_plugin

    first = plugin_code(edited_plugin.M, 1).source
    module.write_text(module.read_text() + "# edited\n")
    from ddbench.core import identity

    identity._source_fingerprint.cache_clear()
    assert plugin_code(edited_plugin.M, 1).source != first


def test_rows_resume_states_and_tables_are_named_by_the_eval_identity(tmp_path, isolated_home):
    from tests.core.test_run_identity import run_job  # a tiny in-process run with a stand-in teacher
    from ddbench.core.results import ResultsStore
    from ddbench.core.pipeline import eval_identity
    from ddbench.evaluators.rded import RdedEvaluator
    from ddbench.core.config import config_to_dict
    from ddbench.core.interfaces import EvalTask
    import torch

    with ResultsStore(tmp_path / "r.sqlite") as store:
        identity, distilled, (row,), _ = run_job(tmp_path, store, evaluator_cls=RdedEvaluator)
        (stored,) = store.rows()
    evaluator = RdedEvaluator(RdedEvaluator.resolve(distilled_dataset(), {"epochs": "2"})[0])
    expected = eval_identity(identity, evaluator, "f" * 64, "convnet3", 0)
    assert stored["eval_key"] == expected.key and stored["eval_base_key"] == expected.base_key
    assert stored["evaluator_config_hash"] == expected.table
    assert stored["run_key"] == identity.key and stored["method_code"] == dict(identity.code)
    # the resume state of this evaluation is named by the same identity (and by what it trains)
    task = EvalTask(dataset=distilled_dataset(), student="convnet3", seed=0, device=torch.device("cpu"),
                    workdir=tmp_path / "states", identity=expected)
    recipe = evaluator.recipe(distilled, task)
    state = evaluator.resume_point(distilled, task, recipe).path
    assert state.name == expected.state_name({"recipe": config_to_dict(recipe), "distilled": distilled.content_hash})
    assert recipe.record() == row.recipe
    other_seed = EvalTask(**{**task.__dict__, "seed": 1, "identity": eval_identity(identity, evaluator, "f" * 64, "convnet3", 1)})
    assert evaluator.resume_point(distilled, other_seed, recipe).path != state


def distilled_dataset():
    from tests.evaluators.synthetic import ColourSquares

    return ColourSquares()


def test_one_hash_function_names_identities():
    """Identities, cache keys and seeds hash through `core/hashing.py` alone; the two modules that
    verify a publisher's download checksum are the only other users of hashlib."""
    package = Path(ddbench.__file__).parent
    allowed = {"core/hashing.py", "core/fetch.py", "generators/weights.py"}
    offenders = []
    for path in package.rglob("*.py"):
        relative = path.relative_to(package).as_posix()
        text = path.read_text()
        if relative not in allowed and re.search(r"\bhashlib\b|\.hexdigest\(\)\[", text):
            offenders.append(relative)
        if re.search(r"json\.dumps\([^\n]*\)\.encode\(\)\)", text):
            offenders.append(f"{relative} (hashes JSON itself)")
    assert offenders == []
    assert stable_hash({"b": 1, "a": [1, 2]}) == stable_hash({"a": [1, 2], "b": 1})


def test_an_unknown_key_lists_valid_keys_in_spellings_set_accepts(tmp_path, isolated_home):
    from ddbench.core.errors import ConfigError
    from ddbench.core.pipeline import split_overrides
    from ddbench.evaluators.hard_label import HardLabelEvaluator
    from tests.core.test_run_identity import PickImages  # a method with a key (offset)

    with pytest.raises(ConfigError) as caught:
        split_overrides({"epoch": "1"}, PickImages, [HardLabelEvaluator])
    message = str(caught.value)
    listed = re.search(r"valid keys: (.*)$", message).group(1).split(", ")
    assert "method.offset" in listed and "did you mean 'epochs'" in message
    for key in listed:  # every listed spelling is accepted as it is written
        prefix, _, bare = key.partition(".")
        split_overrides({key: "1"}, PickImages, [HardLabelEvaluator])
        assert prefix in ("method", HardLabelEvaluator.name) and bare


def test_student_training_evaluators_fingerprint_the_training_loop_and_the_models():
    """A trained student's accuracy is the training loop's and the models' doing as much as the
    evaluator's: rows made before and after a change there never pool. Likewise the rded method's
    crops are its box sampler's, which lives with the training augmentation."""
    from ddbench.core import identity, registry
    from ddbench.core.registry import load_evaluator
    from ddbench.evaluators.base import STUDENT_TRAINING_SOURCE

    assert set(STUDENT_TRAINING_SOURCE) == {"ddbench.evaluators", "ddbench.training", "ddbench.models"}
    for name in ("rded", "hard_label", "ars", "lrs"):
        cls = load_evaluator(name)
        assert identity.source_modules_of(cls) == STUDENT_TRAINING_SOURCE, name
        assert cls.code().source == identity._source_fingerprint(STUDENT_TRAINING_SOURCE)
    assert identity.source_modules_of(load_evaluator("teacher_frechet")) == ("ddbench.evaluators", "ddbench.models")
    assert identity.source_modules_of(load_evaluator("fid")) == ("ddbench.evaluators",)
    assert identity._source_fingerprint(STUDENT_TRAINING_SOURCE) != identity._source_fingerprint(("ddbench.evaluators",))
    # the rded method draws its crops with the training augmentation's box sampler
    assert "ddbench.training.augment" in identity.source_modules_of(registry.load_method("rded"))


def test_a_subclass_that_inherits_source_modules_adds_its_own_code(tmp_path, monkeypatch):
    """A third-party evaluator built on a base that lists shared modules: its own file, the base's
    package and the shared one all make the fingerprint, and its own package names the distribution."""
    from ddbench.core import identity

    (tmp_path / "toy_shared").mkdir()
    (tmp_path / "toy_shared" / "__init__.py").write_text("")
    (tmp_path / "toy_shared" / "loop.py").write_text("STEPS = 1\n")
    (tmp_path / "toy_base").mkdir()
    (tmp_path / "toy_base" / "__init__.py").write_text(
        "from ddbench.core.interfaces import Evaluator\n"
        "class Base(Evaluator):\n    name = 'base'\n    source_modules = ('toy_base', 'toy_shared')\n")
    (tmp_path / "toy_third_party.py").write_text(
        "from toy_base import Base\nclass Mine(Base):\n    name = 'mine'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import toy_base
    import toy_third_party

    assert identity.source_modules_of(toy_base.Base) == ("toy_base", "toy_shared")
    assert identity.source_modules_of(toy_third_party.Mine) == ("toy_third_party", "toy_base", "toy_shared")
    assert plugin_code(toy_third_party.Mine, 1).distribution == "(no distribution: toy_third_party)"
    seen = {plugin_code(toy_third_party.Mine, 1).source}
    for path in (tmp_path / "toy_shared" / "loop.py", tmp_path / "toy_third_party.py"):
        path.write_text(path.read_text() + "# edited\n")
        identity._source_fingerprint.cache_clear()
        seen.add(plugin_code(toy_third_party.Mine, 1).source)
    assert len(seen) == 3  # each edit, the shared module's and the subclass's own, is seen
