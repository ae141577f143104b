"""Grid files expand into exactly the `ddbench run` configurations they name."""

import sys

import pytest

from ddbench.core.errors import ConfigError
from ddbench.core.grid import load_grid, parse_grid, shipped_grids
from tests.sweeps.grids import write_grid


def test_a_grid_expands_into_one_job_per_distilled_set(tmp_path):
    grid = parse_grid({
        "datasets": ["digits"], "ipcs": [1, 2], "students": ["convnet3", "convnet4"], "seeds": [0, 1, 2],
        "evaluators": ["hard_label"], "set": ["hard_label.epochs=1"],
        "methods": [{"method": "random"}, {"method": "var", "id": "var-b2", "set": ["method.cfg_scale=2"]}],
        "grid": [{}, {"datasets": ["digits"], "ipcs": [1], "distill_seeds": [0, 1], "methods": ["random"]}],
    })
    names = [job.name for job in grid.jobs]
    # 2 methods x 2 IPCs, then the second block adds only random ipc1 with distill seed 1 (seed 0 is a duplicate)
    assert len(grid.jobs) == 5, names
    var = next(job for job in grid.jobs if job.method_id == "var-b2" and job.ipc == 2)
    assert var.overrides == ("method.cfg_scale=2", "hard_label.epochs=1")
    assert var.students == ("convnet3", "convnet4") and var.seeds == (0, 1, 2)
    args = var.run_arguments("/r.sqlite", "cpu")
    assert args[:5] == ["run", "--method", "var", "--dataset", "digits"]
    assert args[args.index("--set") + 1] == "method.cfg_scale=2" and args[-4:] == ["--results", "/r.sqlite", "--device", "cpu"]
    assert len({job.key for job in grid.jobs}) == 5


@pytest.mark.parametrize("data, message", [
    ({"datasets": ["digits"], "ipcs": [1]}, "no \\[\\[methods\\]\\]"),
    ({"datasets": ["digits"], "methods": ["random"]}, "no ipcs"),
    ({"datasets": ["digits"], "ipcs": [1], "methods": ["random"], "studnets": ["x"]}, "unknown key\\(s\\) studnets"),
    ({"datasets": ["digits"], "ipcs": [1], "methods": ["random"], "set": ["epochs"]}, "KEY=VALUE"),
    ({"datasets": ["digits"], "ipcs": [1], "methods": ["random"], "grid": [{"methods": ["rded"]}]}, "not in \\[\\[methods\\]\\]"),
])
def test_bad_grids_are_one_clear_error(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid(data)


def test_grid_files_by_path_and_by_shipped_name(tmp_path):
    grid = load_grid(write_grid(tmp_path))
    assert grid.name == "digits-test" and len(grid.jobs) == 2
    assert {"hieramp-table1", "hieramp-table2"} <= set(shipped_grids())
    with pytest.raises(ConfigError, match="hieramp-table1"):
        load_grid("no-such-grid")
    (tmp_path / "bad.toml").write_text("name = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_grid(tmp_path / "bad.toml")


def test_a_missing_submitit_names_the_pip_command(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    result = cli("sweep", str(write_grid(tmp_path)))
    assert result.exit_code == 2
    assert "pip install 'ddbench[sweep]'" in result.output


def test_dry_run_lists_each_job_s_command(cli, tmp_path):
    result = cli("sweep", "run", str(write_grid(tmp_path)), "--dry-run", "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "ddbench run" in line]
    assert len(lines) == 2 and all(line.startswith("[0/4 rows]") for line in lines)
    assert "--method var" in lines[1] and "--students convnet3,convnet4 --teachers resnet18 --seeds 0,1" in lines[1]


def test_local_slots_get_their_own_gpus(monkeypatch):
    from ddbench.core.sweep import gpu_slots, visible_gpus

    assert gpu_slots(2, ["0", "1", "2", "3"]) == [["0", "1"], ["2", "3"]]
    assert gpu_slots(4, ["0", "1"]) == [["0"], ["1"], ["0"], ["1"]]  # too few: slots share
    assert gpu_slots(2, ["5", "7", "9"], per_job=1) == [["5"], ["7"]]
    assert gpu_slots(3, []) == [[], [], []]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, GPU-abc")
    assert visible_gpus() == ["2", "GPU-abc"]


def test_a_launcher_prefixes_every_job_and_a_bad_method_fails_before_submission(cli, tmp_path):
    from ddbench.core.grid import load_grid
    from ddbench.core.sweep import ExecutorOptions

    grid = load_grid(write_grid(tmp_path))
    command = ExecutorOptions(launcher="torchrun --nproc-per-node 4 -m ddbench").command(grid.jobs[0], tmp_path / "r.sqlite")
    assert command[:5] == ["torchrun", "--nproc-per-node", "4", "-m", "ddbench"] and command[5] == "run"
    assert command[command.index("--results") + 1] == str(tmp_path / "r.sqlite")

    bad = write_grid(tmp_path, 'datasets = ["digits"]\nipcs = [1]\nevaluators = ["hard_label"]\n'
                               '[[methods]]\nmethod = "random"\nset = ["method.nope=1"]\n')
    status = cli("sweep", "status", str(bad), "--folder", str(tmp_path / "f"))
    assert "0 done, 0 running, 1 failed, 0 pending" in status.output and "no key 'nope'" in status.output
    result = cli("sweep", str(bad), "--folder", str(tmp_path / "f"))
    assert result.exit_code == 1 and "0 job(s) run, 0 already complete, 1 failed" in result.output
    assert not (tmp_path / "f" / "submitted.json").exists()
