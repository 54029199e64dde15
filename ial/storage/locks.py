"""``StorageLock``: one holder at a time of a lock file under the storage root (local or S3).

A training run (``ial.training.run_dir.RunLock``) and the ingest of a dataset
(``preprocessing.ingest.run.ingest_lock``) each hold one, so that a second start of the same
work (a command started again in a second terminal, the nightly flow while a long ingest still
runs, a retried flow beside a straggler) is refused in one line instead of doing the work
twice. The holder writes its host, pid and start time, and a heartbeat every ``HEARTBEAT_S``; a
start that finds a live lock is a ``UserError`` naming the holder. A lock is stale (taken over,
with a note on stderr) when its heartbeat is older than ``STALE_S`` or its pid is gone on this
host. Local roots create it atomically (``O_EXCL``); on S3 a start writes it, then reads it back
after a second, and the later of two writers keeps it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid

from ial.errors import UserError
from ial.storage import is_remote, pid_alive, read_text, remove, write_text


class StorageLock:
    """Hold the lock file ``url`` for the ``with`` block. ``what`` says what holds it, as the
    refusal's subject ("run 'x' is being trained"); ``advice`` what to do then."""

    HEARTBEAT_S = 30.0
    STALE_S = 120.0

    def __init__(self, url: str, what: str, advice: str):
        self.url, self.what, self.advice = url, what, advice
        self.mine = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
                     "started": time.time()}
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> "StorageLock":
        holder = self._holder()
        if holder is not None:
            if not self._stale(holder):
                raise self._busy(holder)
            print(f"note: taking over {self.url}: its holder is gone ({self._who(holder)})",
                  file=sys.stderr)
            remove(self.url)
        if not self._write(exclusive=True):
            raise self._busy(self._holder() or {})
        if is_remote(self.url):  # no atomic create on S3: the later of two writers keeps it
            time.sleep(1.0)
            holder = self._holder()
            if not holder or holder.get("token") != self.mine["token"]:
                raise self._busy(holder or {})
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="storage-lock")
        self._beat.start()
        return self

    def held_by(self) -> str | None:
        """Who holds the lock ("pid N on host, its last heartbeat S s ago"), or None when it is
        free or its holder is gone."""
        holder = self._holder()
        return None if holder is None or self._stale(holder) else self._who(holder)

    def check(self) -> None:
        """Raise the refusal ``__enter__`` would raise for a live holder, without taking the
        lock (a command's input check, before it starts a flow that would take it)."""
        holder = self._holder()
        if holder is not None and not self._stale(holder):
            raise self._busy(holder)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        holder = self._holder()
        if holder and holder.get("token") == self.mine["token"]:
            remove(self.url)

    def _holder(self) -> dict | None:
        try:
            return json.loads(read_text(self.url))
        except FileNotFoundError:
            return None
        except ValueError:  # a torn write of a killed holder
            return {}

    def _write(self, exclusive: bool = False) -> bool:
        text = json.dumps({**self.mine, "heartbeat": time.time()})
        if exclusive and not is_remote(self.url):
            os.makedirs(os.path.dirname(self.url) or ".", exist_ok=True)
            try:
                fd = os.open(self.url, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(text)
            return True
        write_text(self.url, text)
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.HEARTBEAT_S):
            try:
                self._write()
            except OSError as exc:  # an outage: the next beat tries again
                print(f"note: lock heartbeat of {self.url} failed: {exc}", file=sys.stderr)

    def _stale(self, holder: dict) -> bool:
        if time.time() - float(holder.get("heartbeat", 0)) > self.STALE_S:
            return True
        return holder.get("host") == self.mine["host"] and not pid_alive(int(holder.get("pid", 0)))

    def _who(self, holder: dict) -> str:
        beat = time.time() - float(holder.get("heartbeat", time.time()))
        return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, its last heartbeat "
                f"{beat:.0f} s ago")

    def _busy(self, holder: dict) -> UserError:
        return UserError(f"{self.what} already ({self._who(holder)}; {self.url}): {self.advice}; "
                         f"the lock of one that is gone expires {self.STALE_S:.0f} s after its "
                         f"last heartbeat")
