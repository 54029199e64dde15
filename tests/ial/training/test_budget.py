"""The run's budget (steps or wall time) and the learning-rate decay over it."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from ial.runtime import free_port
from ial.training.budget import (LR_DECAYS, HangUpOnClosedOutput, StopSignals, agreed_progress,
                                 progress, scale_learning_rates)


def test_progress_is_the_further_of_steps_and_wall_time():
    assert progress(25, 100, 0.0, float("inf")) == 0.25
    assert progress(25, 100, 30.0, 60.0) == 0.5
    assert progress(90, 100, 30.0, 60.0) == 0.9
    assert progress(1, 100, 61.0, 60.0) > 1.0


def test_cosine_goes_from_one_to_zero_and_constant_stays():
    cos = LR_DECAYS["cosine"]
    assert cos(0.0) == 1.0 and cos(1.0) == pytest.approx(0.0, abs=1e-12)
    assert cos(0.5) == pytest.approx(0.5) and cos(2.0) == pytest.approx(0.0, abs=1e-12)
    assert [LR_DECAYS["constant"](p) for p in (0.0, 0.5, 1.0)] == [1.0, 1.0, 1.0]


def _optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr},
                            {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr / 10}])


def test_without_a_scheduler_the_factor_applies_to_the_configured_lr_not_compounds():
    opt = _optimizer()
    for factor in (0.5, 0.5, 0.25):
        scale_learning_rates(opt, factor)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.025, 0.0025])


def test_with_a_scheduler_the_factor_applies_to_what_it_set():
    opt = _optimizer()
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 4))
    used = []
    for step in range(6):
        scale_learning_rates(opt, LR_DECAYS["cosine"](step / 6))
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        warmup.step()
    expected = [0.1 * min(1.0, (s + 1) / 4) * 0.5 * (1 + math.cos(math.pi * s / 6))
                for s in range(6)]
    assert used == pytest.approx(expected)


@pytest.fixture
def default_signals():
    """SIGINT and SIGTERM at their defaults while the test runs (a CI job started in the
    background has SIGINT ignored, which StopSignals leaves alone)."""
    previous = {s: signal.signal(s, signal.SIG_DFL) for s in StopSignals.SIGNALS}
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def test_a_stop_signal_is_recorded_not_fatal_and_the_handlers_come_back(default_signals):
    with StopSignals() as stop:
        assert stop.signal is None
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # a second one changes nothing
        assert stop.signal == "SIGTERM"
    assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_an_ignored_signal_stays_ignored_and_other_threads_install_nothing(default_signals):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with StopSignals():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    seen = []
    thread = threading.Thread(target=lambda: seen.append(StopSignals().__enter__()._previous))
    thread.start()
    thread.join()
    assert seen == [{}]


def test_a_closed_output_is_a_hang_up_that_stops_the_run(default_signals):
    # a remote rank's stdout when its ssh connection has closed: no reader on the pipe
    read_end, write_end = os.pipe()
    os.close(read_end)
    out = HangUpOnClosedOutput(os.fdopen(write_end, "w"))
    with StopSignals() as stop:
        print("step 12", file=out, flush=True)  # no BrokenPipeError
        assert stop.signal == "SIGHUP" and out.closed_at is not None
        print("saved at step 13", file=out, flush=True)  # dropped, and no second hang-up
    assert out.encoding  # the stream's own attributes
    with contextlib.suppress(OSError):
        out._stream.close()


def test_a_closed_output_outside_a_stop_handler_is_dropped_then_noticed(default_signals,
                                                                          monkeypatch):
    # SIGHUP at its default would kill the process: while no StopSignals takes it (before the
    # training loop, or after it, while the last checkpoint is written), nothing is raised
    read_end, write_end = os.pipe()
    os.close(read_end)
    out = HangUpOnClosedOutput(os.fdopen(write_end, "w"))
    print("loading shards", file=out, flush=True)  # the process is still alive after this
    assert out.closed_at is not None
    monkeypatch.setattr(sys, "stderr", out)
    with StopSignals() as stop:  # the training loop starts: it stops at its first step
        assert stop.signal == "SIGHUP"
    with contextlib.suppress(OSError):
        out._stream.close()


RANK = """
import signal, sys, time
def save(*_):
    time.sleep(0.5)  # a checkpoint being written
    open(sys.argv[1], "w").write("saved")
    sys.exit(0)
signal.signal(signal.SIGTERM, save)
open(sys.argv[1] + ".up", "w").close()
time.sleep(60)
"""


def test_a_forwarded_signal_reaches_the_whole_group_and_is_waited_for(default_signals,
                                                                       tmp_path):
    # a runner without a handler of its own (as the `deepspeed` runner) and, under it, a rank
    # that saves for half a second when stopped: both get the signal, the wait sees the save
    saved = tmp_path / "saved"
    runner = (f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
              f"{RANK!r}, {str(saved)!r}]); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", runner], start_new_session=True)
    with StopSignals(forward_to=proc) as stop:
        while not (tmp_path / "saved.up").exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
        assert proc.wait(timeout=20) == -signal.SIGTERM  # the runner is gone at once
        stop.wait_for_group(timeout_s=20)
    assert stop.signal == "SIGTERM"
    assert saved.read_text() == "saved"


def _agree(rank: int, port: int, stop: str | None, out) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    out.put((rank, agreed_progress(0.5 + rank / 10, None)))
    out.put((rank, agreed_progress(0.5 + rank / 10, stop)))
    dist.destroy_process_group()


def test_every_rank_agrees_on_rank_zeros_progress_and_any_ranks_stop():
    assert agreed_progress(0.3, None) == (0.3, None)  # one process: no collective
    assert agreed_progress(0.3, "SIGINT") == (1.0, "SIGINT")
    ctx = torch.multiprocessing.get_context("spawn")
    out, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_agree, args=(r, port, "SIGTERM" if r == 1 else None, out))
             for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=60) for _ in range(4))
    for p in procs:
        p.join(timeout=60)
    assert results == [(0, (0.5, None)), (0, (1.0, "SIGTERM")),
                       (1, (0.5, None)), (1, (1.0, "SIGTERM"))]
