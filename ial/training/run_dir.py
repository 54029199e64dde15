"""Where one run lives under the storage root, and its commit marker.

``<root>/checkpoints/<run>/``: config.yaml, deepspeed/{separator,critic}/<tag>/ (DeepSpeed state +
``ial_rank<r>.pt``), deepspeed/latest.json (the commit marker: the last COMPLETE tag), model.pt,
best/model.pt, validated/step<N>/model.pt (``keep_validated``), metrics.jsonl, tensorboard/,
result.json. With an ``s3://`` root DeepSpeed writes to a local staging directory
(``RunDir.local``) and tags are uploaded before the marker is written.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from ial.errors import UserError
from ial.storage import (Storage, exists, filesystem, is_remote, join, pid_alive, read_text,
                         remove, upload_file, write_text)
from ial.training.config import REPO, TrainConfig

MARKER = "latest.json"


def git_sha() -> str:
    """The repository's commit (``+dirty`` when it has local changes), or ``unknown``."""
    try:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class RunDir:
    """URLs of one run under the root, and the local directory DeepSpeed writes to."""

    def __init__(self, cfg: TrainConfig):
        self.store = Storage(cfg.root)
        self.url = self.store.url("checkpoints", cfg.run_name)
        if self.store.remote:
            base = cfg.staging_dir or os.path.join(tempfile.gettempdir(), "ial-staging")
            safe = self.url.split("://", 1)[1].replace("/", "_")
            self.local = os.path.join(base, safe)
        else:
            self.local = self.url
        self.ds_local = os.path.join(self.local, "deepspeed")
        self.tb_local = os.path.join(self.local, "tensorboard")

    def __call__(self, *parts: str) -> str:
        """URL of a file of this run: ``run("best", "model.pt")``."""
        return join(self.url, *parts)

    def engine_dir(self, engine: str) -> str:
        return os.path.join(self.ds_local, engine)

    def read_marker(self) -> dict | None:
        url = self("deepspeed", MARKER)
        return json.loads(read_text(url)) if exists(url) else None

    def upload_tag(self, tag: str) -> None:
        """Copy the local tag directories to the remote run (remote roots only)."""
        for engine in ("separator", "critic"):
            local = os.path.join(self.engine_dir(engine), tag)
            for dirpath, _, files in os.walk(local):
                for name in files:
                    path = os.path.join(dirpath, name)
                    rel = os.path.relpath(path, self.ds_local).replace(os.sep, "/")
                    upload_file(path, self("deepspeed", rel))

    def download_tag(self, tag: str) -> None:
        """Fetch a tag's directories from the remote run into local staging."""
        for engine in ("separator", "critic"):
            fs, path = filesystem(self("deepspeed", engine, tag))
            for remote in fs.find(path):
                rel = remote[len(path):].lstrip("/")
                local = os.path.join(self.engine_dir(engine), tag, rel)
                os.makedirs(os.path.dirname(local), exist_ok=True)
                fs.get_file(remote, local)

    def prune(self, keep: list[str], remote: bool) -> None:
        """Delete tag directories not in ``keep`` (locally; and remotely when ``remote``)."""
        for engine in ("separator", "critic"):
            d = self.engine_dir(engine)
            for name in os.listdir(d) if os.path.isdir(d) else []:
                if name.startswith("step") and name not in keep:
                    shutil.rmtree(os.path.join(d, name), ignore_errors=True)
            if remote and self.store.remote:
                fs, path = filesystem(self("deepspeed", engine))
                for entry in fs.ls(path, detail=False) if fs.exists(path) else []:
                    if entry.rstrip("/").rsplit("/", 1)[-1] not in keep:
                        fs.rm(entry, recursive=True)


class RunLock:
    """One training at a time in a run directory: ``<run>/training.lock`` (rank 0 holds it).

    Two trainings of one run (a command started again in a second terminal while the first
    still runs, a flow retried beside a straggler) would write the same checkpoints and
    metrics. The holder writes its host, pid and start time, and a heartbeat every
    ``HEARTBEAT_S``; a start that finds a live lock is a ``UserError`` naming the holder. A lock
    is stale (taken over, with a note on stderr) when its heartbeat is older than ``STALE_S`` or its
    pid is gone on this host. Local roots create it atomically (``O_EXCL``); on S3 a start
    writes it, then reads it back after a second, and the later of two writers keeps it."""

    HEARTBEAT_S = 30.0
    STALE_S = 120.0

    def __init__(self, run: RunDir, run_name: str):
        self.url, self.run_name = run("training.lock"), run_name
        self.mine = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
                     "started": time.time()}
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> "RunLock":
        holder = self._holder()
        if holder is not None:
            if not self._stale(holder):
                raise self._busy(holder)
            print(f"note: taking over the lock of a training that is gone ({self._who(holder)})",
                  file=sys.stderr)
            remove(self.url)
        if not self._write(exclusive=True):
            raise self._busy(self._holder() or {})
        if is_remote(self.url):  # no atomic create on S3: the later of two writers keeps it
            time.sleep(1.0)
            holder = self._holder()
            if not holder or holder.get("token") != self.mine["token"]:
                raise self._busy(holder or {})
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="run-lock")
        self._beat.start()
        return self

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
            os.makedirs(os.path.dirname(self.url), exist_ok=True)
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
                print(f"note: run lock heartbeat failed: {exc}", file=sys.stderr)

    def _stale(self, holder: dict) -> bool:
        if time.time() - float(holder.get("heartbeat", 0)) > self.STALE_S:
            return True
        return holder.get("host") == self.mine["host"] and not pid_alive(int(holder.get("pid", 0)))

    def _who(self, holder: dict) -> str:
        beat = time.time() - float(holder.get("heartbeat", time.time()))
        return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, its last heartbeat "
                f"{beat:.0f} s ago")

    def _busy(self, holder: dict) -> UserError:
        return UserError(f"run {self.run_name!r} is being trained already ({self._who(holder)}; "
                         f"{self.url}): wait for it to end or stop it, or choose another "
                         f"--run-name; the lock of a training that is gone expires "
                         f"{self.STALE_S:.0f} s after its last heartbeat")


def resume_mismatch(marker: dict, **current) -> str | None:
    """Why a checkpoint cannot be resumed exactly by this run, or None.

    Exact mid-epoch resume replays the loader position (batches of an epoch per rank), which means
    the same samples only with the same ``world_size`` (processes), ``batch_size`` and
    ``num_workers`` (loader processes per rank, which interleave the shards). Markers written
    before a field was recorded are not checked for it.
    """
    what = {"world_size": "processes", "batch_size": "batch_size", "num_workers": "num_workers"}
    for key, value in current.items():
        saved = marker.get(key, value)
        if saved != value:
            return (f"was saved with {what[key]}={saved}, this run has {value}: exact resume "
                    f"needs the same {what[key]}; use {saved} or set resume: false")
    return None
