"""Ctrl-C inside `fit` with `save_on_interrupt` (the generator fine-tunes): the running step
finishes, its state is saved and KeyboardInterrupt raised, so the rerun starts at the next step and
ends bit for bit where an uninterrupted run ends; a second Ctrl-C stops at once. Without it a
Ctrl-C stops mid-step and the last periodic checkpoint is what is left."""

from __future__ import annotations

import signal

import pytest
import torch

from tests.training.tiny_fit import run


@pytest.fixture(autouse=True)
def python_ctrl_c_handler():
    """Python's own SIGINT handler, as in a terminal (a background shell may have left SIG_IGN)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def saved_step(folder) -> int:
    return torch.load(folder / "tiny_last.ckpt", weights_only=True)["step"]


def test_ctrl_c_saves_the_running_step_and_the_rerun_gives_the_uninterrupted_result(tmp_path):
    straight, model, ema = run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "stopped", ctrl_c_at=(4,), save_on_interrupt=True)  # 0-based step 4: the 5th
    assert saved_step(tmp_path / "stopped") == 5  # the periodic checkpoint was at 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    resumed, resumed_model, resumed_ema = run(tmp_path / "stopped", save_on_interrupt=True)
    assert resumed.resumed_from == 5 and resumed.finished
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), resumed_model.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), resumed_ema.state_dict().values()))
    assert torch.equal(straight.losses, resumed.losses)


def test_a_second_ctrl_c_stops_at_once_and_without_the_switch_the_last_checkpoint_is_left(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "twice", ctrl_c_at=(4, 4), save_on_interrupt=True)
    assert saved_step(tmp_path / "twice") == 3
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "plain", ctrl_c_at=(4,))
    assert saved_step(tmp_path / "plain") == 3
