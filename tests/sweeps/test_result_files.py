"""`ddbench sweep status` reads submitit's result files as plain data and never runs code from them."""

import os
import pickle

from ddbench.core.sweep import _result_problem


class Planted:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_job_result_is_read_as_plain_data_and_a_planted_one_never_runs(tmp_path):
    done = tmp_path / "done_result.pkl"
    done.write_bytes(pickle.dumps(("success", 0)))
    assert _result_problem(done) == ""
    failed = tmp_path / "failed_result.pkl"
    failed.write_bytes(pickle.dumps(("error", "Traceback ...\nRuntimeError: ddbench run exited with status 2: error: x")))
    assert _result_problem(failed).startswith("RuntimeError: ddbench run exited with status 2: error: x")
    marker = tmp_path / "code-ran"
    planted = tmp_path / "planted_result.pkl"
    planted.write_bytes(pickle.dumps(("success", Planted(marker))))
    assert "unreadable result" in _result_problem(planted) and "posix.system" in _result_problem(planted)
    assert not marker.exists()
    assert "no result" in _result_problem(tmp_path / "missing_result.pkl")
