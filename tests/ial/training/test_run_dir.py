"""``ial.training.run_dir.RunLock``: one training at a time in a run directory."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from ial.errors import UserError
from ial.storage import exists, read_text, write_text
from ial.training.config import TrainConfig
from ial.training.run_dir import RunDir, RunLock


def _run(root: str) -> RunDir:
    return RunDir(TrainConfig(root=root, run_name="r1"))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_second_training_of_a_run_is_refused_and_the_lock_goes_with_the_first(
        tmp_path, request, where):
    root = str(tmp_path) if where == "local" else request.getfixturevalue("s3_root")
    run = _run(root)
    with RunLock(run, "r1"):
        holder = json.loads(read_text(run("training.lock")))
        busy = r"^run 'r1' is being trained already \(pid \d+ on .*, its last heartbeat [01] s ago"
        with pytest.raises(UserError, match=busy + r"; .*training.lock\)"):
            with RunLock(run, "r1"):
                pass
        assert json.loads(read_text(run("training.lock"))) == holder  # the refused one left it
    assert not exists(run("training.lock"))
    with RunLock(run, "r1"):  # free again
        pass


def test_a_lock_whose_holder_is_gone_is_taken_over(tmp_path, capsys):
    run = _run(str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    lock = RunLock(run, "r1")
    # a killed holder on this host: its pid is gone, whatever its heartbeat says
    write_text(run("training.lock"), json.dumps({**lock.mine, "pid": int(gone),
                                                 "heartbeat": time.time()}))
    with lock:
        assert json.loads(read_text(run("training.lock")))["token"] == lock.mine["token"]
    assert "taking over the lock of a training that is gone (pid " in capsys.readouterr().err
    # another host: only its heartbeat tells; fresh is refused, older than STALE_S is taken over
    other = {"host": "elsewhere", "pid": 1, "token": "x", "started": 0.0}
    write_text(run("training.lock"), json.dumps({**other, "heartbeat": time.time() - 10}))
    with pytest.raises(UserError, match="pid 1 on elsewhere, its last heartbeat 10 s ago"):
        with RunLock(run, "r1"):
            pass
    write_text(run("training.lock"),
               json.dumps({**other, "heartbeat": time.time() - RunLock.STALE_S - 1}))
    with RunLock(run, "r1"):
        pass


def test_the_holder_beats_while_it_trains(tmp_path, monkeypatch):
    monkeypatch.setattr(RunLock, "HEARTBEAT_S", 0.05)
    run = _run(str(tmp_path))
    with RunLock(run, "r1"):
        first = json.loads(read_text(run("training.lock")))["heartbeat"]
        time.sleep(0.3)
        assert json.loads(read_text(run("training.lock")))["heartbeat"] > first
