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
import subprocess
import tempfile

from ial.storage import Storage, exists, filesystem, join, read_text, upload_file
from ial.storage.locks import StorageLock
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


class RunLock(StorageLock):
    """One training at a time in a run directory: ``<run>/training.lock``, held by rank 0
    (``ial.storage.locks.StorageLock``: host, pid, heartbeat; a second start is one line naming the
    holder; the lock of a training that is gone is taken over)."""

    def __init__(self, run: RunDir, run_name: str):
        super().__init__(run("training.lock"), f"run {run_name!r} is being trained",
                         "wait for it to end or stop it, or choose another --run-name")


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
