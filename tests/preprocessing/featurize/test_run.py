"""Featurize on a real Dask cluster (scheduler + 2 workers on loopback) into moto S3, killing a
worker mid-run: every ok clip still lands in exactly one shard, exactly once."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ial.storage import Storage, listdir
from preprocessing.featurize.run import featurize
from preprocessing.shard_schema import shard_metadata
from preprocessing.shards import iter_shard_rows, list_shards, read_dataset_index, read_shard
from tests.conftest import REPO, free_port, wait_for_port
from tests.preprocessing.featurize.clip_roots import (  # noqa: F401
    make_clip_root, small_config, source_videos,
)

pytestmark = pytest.mark.slow
DASK = str(Path(sys.executable).parent / "dask")


@pytest.fixture
def dask_cluster(moto_server):
    """``dask scheduler`` + two ``dask worker --nthreads 1 --no-nanny`` processes on loopback."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], env=env, cwd=REPO, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_for_port(port, 60, procs[0])
        for i in range(2):
            procs.append(subprocess.Popen(
                [DASK, "worker", address, "--nthreads", "1", "--no-nanny", "--name", f"w{i}",
                 "--no-dashboard", "--host", "127.0.0.1"], env=env, cwd=REPO,
                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield address, procs[1:]
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def test_worker_killed_mid_run_every_clip_once(s3_root, dask_cluster, source_videos):  # noqa: F811
    address, workers = dask_cluster
    labels = make_clip_root(s3_root, source_videos, n_good=10)
    cfg = small_config(s3_root, clips_per_shard=1, dask_address=address, frame_size=32)
    root = Storage(s3_root)
    stats_dir = root.url("shards", "toy", "_stats")
    killed = threading.Event()
    done_at_kill = []

    def kill_after_first_shard():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not listdir(stats_dir):
            time.sleep(0.05)
        os.killpg(workers[0].pid, signal.SIGKILL)
        done_at_kill.append(len(listdir(stats_dir)))
        killed.set()

    killer = threading.Thread(target=kill_after_first_shard, daemon=True)
    killer.start()
    summary = featurize(cfg, progress=False)
    killer.join(10)
    assert killed.is_set() and workers[0].wait(10) == -signal.SIGKILL
    assert done_at_kill[0] < 11  # killed mid-run, not after the last shard
    # the run finished on the surviving worker: 11 ok clips (one corrupt) → 11 shards. A shard
    # the killed worker completed just before dying is re-run and found complete (skipped).
    assert summary["shards_total"] == 11
    assert summary["shards_written"] + summary["shards_skipped"] == 11
    urls = list_shards(root, "toy")
    assert len(urls) == 11
    counts = collections.Counter(row["clip_id"] for url in urls
                                 for row in iter_shard_rows(url, columns=["clip_id"]))
    assert counts == {clip_id: 1 for clip_id in labels}  # every good clip exactly once
    index = read_dataset_index(root, "toy")
    assert index["rows"] == 10 and index["failed"] == 1
    assert shard_metadata(read_shard(urls[0]))["visual_weights"] == "none (random init)"
    # no temporary or partial objects are visible under the shards prefix
    names = [u.rsplit("/", 1)[-1] for u in listdir(root.url("shards", "toy"))]
    assert sorted(n for n in names if n.endswith(".parquet") and n.startswith("shard-")) == \
        [f"shard-{i:05d}.parquet" for i in range(11)]
    # re-running does no work
    again = featurize(cfg, progress=False)
    assert again["shards_written"] == 0 and again["shards_skipped"] == 11
