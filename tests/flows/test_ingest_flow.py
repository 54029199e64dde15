"""The Prefect flow ``ingest`` (Dask task runner, LocalCluster) over the loopback video server."""

from __future__ import annotations

import pytest

from ial.storage import Storage
from preprocessing.clip_index import read_clip_index
from preprocessing.ingest.batch import reason_code
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_ingest_flow_dask_runner(tmp_path, demo_corpus, video_server, prefect_harness):
    from prefect.client.orchestration import get_client

    from flows.ingest import ingest_flow

    manifest = tmp_path / "flow.csv"
    entries = demo_corpus.entries[:3]
    manifest.write_text("".join(f"{e.video_id},{e.start_seconds:g},{e.label},{e.split}\n"
                                for e in entries) + "nothere0001,1,bass,train\n")
    overrides = [f"url_template={video_server.url_template}", "clip_seconds=3",
                 "batch_size=2", "dask_workers=1", "dask_threads=2"]
    summary = ingest_flow(manifest=str(manifest), root=str(tmp_path / "root"), dataset="flow",
                          config=str(REPO / "configs/ingest/demo.yaml"), overrides=overrides)
    assert summary["by_status"] == {"ok": 3, "unavailable": 1} and summary["batches"] == 2
    index = read_clip_index(Storage(tmp_path / "root"), "flow")
    rows = {r["clip_id"]: r for r in index.to_pylist()}
    assert reason_code(rows["nothere0001_1000"]["reason"]) == "http_404"
    assert all(rows[f"{e.video_id}_{int(e.start_seconds * 1000)}"]["status"] == "ok"
               for e in entries)

    import asyncio

    async def progress():
        async with get_client() as client:
            arts = await client.read_latest_artifacts()
            return [a for a in arts if a.key == "ingest-flow"]

    (art,) = asyncio.run(progress())
    assert art.type == "progress" and float(art.data) == 100.0


def test_a_bad_manifest_in_prefect_mode_is_one_line_not_two_tracebacks(tmp_path,
                                                                        prefect_harness):
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    from flows.ingest import ingest_flow
    from preprocessing.ingest.manifests import ManifestError

    bad = tmp_path / "bad.csv"
    bad.write_text("abcdefghijk,1,violin\n")
    message = (f"{bad}:1: expected 4 fields (youtube_id,start_seconds,label,split), got 3 (the "
               f"ingest config's skip_malformed: true skips and counts such rows)")
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value())
    ial = os.path.join(os.path.dirname(sys.executable), "ial")
    proc = subprocess.run([ial, "ingest", "--manifest", str(bad),
                           "--root", str(tmp_path / "root")], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out, out
    # `ial ingest` reads the manifest before it starts the flow: the one line, and no flow run
    assert out.strip().splitlines() == [f"Error: {message}"], out
    # the flow itself (a deployment's run) ends Failed with that line as its message
    state = ingest_flow(manifest=str(bad), root=str(tmp_path / "root"), return_state=True)
    assert state.is_failed() and message in state.message, state
    with pytest.raises(ManifestError, match="expected 4 fields"):
        ingest_flow(manifest=str(bad), root=str(tmp_path / "root"))


def test_the_ingest_flow_starts_the_stages_shared_local_cluster():
    """The flow's LocalCluster: ``dask_workers`` × ``dask_threads``, with the worker settings
    featurize's cluster gets (``ial.runtime.local_cluster_kwargs``: profiler off, ...)."""
    from flows.ingest import ingest_task_runner
    from ial.runtime import local_cluster_kwargs
    from preprocessing.ingest.config import IngestConfig

    runner = ingest_task_runner(IngestConfig(dask_workers=3, dask_threads=4))
    assert runner.cluster_kwargs == local_cluster_kwargs(3, 4)
    assert runner.cluster_kwargs["n_workers"] == 3
    assert runner.cluster_kwargs["threads_per_worker"] == 4
    assert runner.cluster_kwargs["config"]["distributed"]["worker"]["profile"]["enabled"] is False
