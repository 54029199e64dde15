"""``ial.storage.locks.StorageLock``: one holder at a time of a lock file under the root."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from ial.errors import UserError
from ial.storage import exists, join, read_text, write_text
from ial.storage.locks import StorageLock


def _lock(url: str) -> StorageLock:
    return StorageLock(url, "the thing is being done", "wait for it")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_second_holder_is_refused_and_the_lock_goes_with_the_first(tmp_path, request, where):
    root = str(tmp_path) if where == "local" else request.getfixturevalue("s3_root")
    url = join(root, "work", "x.lock")
    _lock(url).check()  # free: no refusal
    assert _lock(url).held_by() is None
    with _lock(url):
        holder = json.loads(read_text(url))
        with pytest.raises(UserError, match="the thing is being done already"):
            _lock(url).check()
        assert _lock(url).held_by().startswith(f"pid {holder['pid']} on {holder['host']}")
        busy = (r"^the thing is being done already \(pid \d+ on .*, its last heartbeat [01] s "
                r"ago; .*x\.lock\): wait for it; the lock of one that is gone expires 120 s")
        with pytest.raises(UserError, match=busy):
            with _lock(url):
                pass
        assert json.loads(read_text(url)) == holder  # the refused one left it
    assert not exists(url)
    with _lock(url):  # free again
        pass


def test_a_lock_whose_holder_is_gone_is_taken_over(tmp_path, capsys):
    url = str(tmp_path / "x.lock")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    lock = _lock(url)
    # a killed holder on this host: its pid is gone, whatever its heartbeat says
    write_text(url, json.dumps({**lock.mine, "pid": int(gone), "heartbeat": time.time()}))
    with lock:
        assert json.loads(read_text(url))["token"] == lock.mine["token"]
    assert f"taking over {url}: its holder is gone (pid {gone} " in capsys.readouterr().err
    # another host: only its heartbeat tells; fresh is refused, older than STALE_S is taken over
    other = {"host": "elsewhere", "pid": 1, "token": "x", "started": 0.0}
    write_text(url, json.dumps({**other, "heartbeat": time.time() - 10}))
    with pytest.raises(UserError, match="pid 1 on elsewhere, its last heartbeat 10 s ago"):
        with _lock(url):
            pass
    write_text(url, json.dumps({**other, "heartbeat": time.time() - StorageLock.STALE_S - 1}))
    with _lock(url):
        pass


def test_the_holder_beats_while_it_works(tmp_path, monkeypatch):
    monkeypatch.setattr(StorageLock, "HEARTBEAT_S", 0.05)
    url = str(tmp_path / "x.lock")
    with _lock(url):
        first = json.loads(read_text(url))["heartbeat"]
        time.sleep(0.3)
        assert json.loads(read_text(url))["heartbeat"] > first
