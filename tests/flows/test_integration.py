"""Real components end to end: the way users run the system.

Started here, on loopback only, and stopped in ``finally``: a Prefect server (SQLite, temporary
PREFECT_HOME), a Dask scheduler with two workers, the moto S3 server (fixture), a Range-capable
video server, and ``ial serve``. Then, from the command line:

- ``prefect deployment run ingest/vggsound --param ...`` → clips and clip index land on s3://;
- the nightly deployment is registered with its cron schedule (and the server schedules runs);
- ``prefect deployment run retrain/nightly`` → featurize on the Dask workers, train, evaluate,
  promote (no champion yet) → ``champion.json`` and the decision record on s3://.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for_port, wait_until

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


class Processes:
    """Subprocesses of this test, each in its own session (so its children stop with it)."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=REPO)
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str, lines: int = 40) -> str:
        text = (self.log_dir / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop_all(self) -> None:
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)


def api_get(api: str, path: str):
    import httpx

    try:
        r = httpx.get(f"{api}{path}", timeout=5)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def run_deployment(name: str, params: dict, env: dict, timeout: int) -> subprocess.CompletedProcess:
    argv = [str(BIN / "prefect"), "deployment", "run", name, "--watch", "--watch-interval", "2",
            "--watch-timeout", str(timeout)]
    for key, value in params.items():
        argv += ["--param", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout + 30,
                          cwd=REPO)


def flow_run_state(api: str, output: str) -> str | None:
    """The final state type of the flow run whose UUID the CLI printed."""
    import re

    m = re.search(r"UUID: ([0-9a-f-]{36})", output)
    if not m:
        return None
    run = api_get(api, f"/flow_runs/{m.group(1)}")
    return run["state"]["type"] if run else None


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_deployments_run_on_a_real_prefect_server_dask_and_s3(tmp_path, s3_root, moto_server):
    from distributed import Client

    from ial.demo.corpus import generate_corpus
    from ial.demo.video_server import VideoServer
    from ial.storage import Storage, exists, glob, read_text, write_bytes
    from preprocessing.clip_index import read_clip_index

    corpus = generate_corpus(str(tmp_path / "corpus"), classes=["violin", "flute"],
                             videos_per_class=3, seconds=13.0, seed=5, workers=2)
    root = Storage(s3_root)
    write_bytes(root.url("manifests", "vggsound.csv"), Path(corpus.manifest).read_bytes())

    prefect_port, dask_port = free_port(), free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect_home"), PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu",
        TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR",
                                            str(REPO / ".torch_extensions")),
        PYTHONPATH=str(REPO),
    )
    dask_address = f"tcp://127.0.0.1:{dask_port}"
    procs = Processes(tmp_path)
    try:
        with VideoServer(corpus.out_dir) as videos:
            nightly = tmp_path / "nightly.yaml"
            nightly.write_text(json.dumps({
                "dataset": "vggsound", "manifest_format": "vggsound",
                "ingest_config": str(REPO / "configs/ingest/demo.yaml"),
                "ingest_overrides": [f"url_template={videos.url_template}"],
                "featurize_config": str(REPO / "configs/featurize/demo.yaml"),
                "train_config": str(REPO / "configs/train/demo.yaml"),
                "train_overrides": ["steps=2", "val_every=2", "checkpoint_every=2",
                                    "val_mixtures=1", "batch_size=2", "num_workers=0",
                                    "method.lambda_av=0"],
                "eval_config": str(REPO / "configs/eval/demo.yaml"),
                "eval_overrides": ["n_per_combination=1", "num_examples=0", "oracles=[]"],
            }))

            server = procs.start("prefect-server",
                                 [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                  "--port", str(prefect_port)], env)
            procs.start("dask-scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1",
                                           "--port", str(dask_port), "--no-dashboard"], env)
            for i in range(2):
                procs.start(f"dask-worker-{i}", [str(BIN / "dask"), "worker", dask_address,
                                                 "--nthreads", "1", "--no-dashboard",
                                                 "--memory-limit", "0"], env)
            wait_for_port(prefect_port, 90, server)
            wait_until(lambda: api_get(api, "/health") is True, 90, "Prefect API not healthy")
            wait_for_port(dask_port, 30)
            with Client(dask_address, timeout=30) as client:
                client.wait_for_workers(2, timeout=60)

            serve = procs.start("serve", [str(BIN / "ial"), "serve", "--root", s3_root,
                                          "--dask-address", dask_address,
                                          "--retrain-config", str(nightly)], env)
            nightly_dep = wait_until(
                lambda: serve.poll() is None and api_get(api, "/deployments/name/retrain/nightly"),
                90, "retrain/nightly not registered (serve log:\n" + procs.log("serve") + ")")
            for name in ("ingest/vggsound", "ingest/audioset", "ingest/music", "featurize/default",
                         "train/default", "evaluate/default"):
                assert api_get(api, f"/deployments/name/{name}"), name

            # The nightly schedule is registered, and the server schedules runs from it.
            (schedule,) = nightly_dep["schedules"]
            assert schedule["schedule"]["cron"] == "0 3 * * *"
            assert schedule["schedule"]["timezone"] == "UTC"
            assert nightly_dep["parameters"]["root"] == s3_root

            def scheduled_runs():
                import httpx

                body = {"deployments": {"id": {"any_": [nightly_dep["id"]]}},
                        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}
                r = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=5)
                return r.json() if r.status_code == 200 else None

            runs = wait_until(scheduled_runs, 30, "no scheduled nightly runs")
            assert all(r["expected_start_time"][11:16] == "03:00" for r in runs)

            # ingest/vggsound from the command line → clips + clip index on s3://.
            done = run_deployment("ingest/vggsound", {
                "manifest": root.url("manifests", "vggsound.csv"),
                "config": str(REPO / "configs/ingest/demo.yaml"),
                "overrides": [f"url_template={videos.url_template}"],
            }, env, timeout=120)
            assert flow_run_state(api, done.stdout + done.stderr) == "COMPLETED", (
                done.stdout[-3000:] + done.stderr[-3000:] + procs.log("serve"))
            clips = glob(root.url("clips", "vggsound", "*.mp4"))
            assert len(clips) == len(corpus.entries)
            assert glob(root.url("clips", "vggsound", "index", "*.parquet"))
            index = read_clip_index(root, "vggsound")
            assert set(index.column("status").to_pylist()) == {"ok"}
            assert all(p.startswith("s3://") or not p.startswith("/")
                       for p in index.column("path").to_pylist())

            # retrain/nightly → featurize on Dask, train, evaluate, promote the first champion.
            done = run_deployment("retrain/nightly", {}, env, timeout=200)
            assert flow_run_state(api, done.stdout + done.stderr) == "COMPLETED", (
                done.stdout[-3000:] + done.stderr[-3000:] + procs.log("serve", 80))
            assert exists(root.url("champion.json"))
            champion = json.loads(read_text(root.url("champion.json")))
            assert champion["checkpoint"].startswith(s3_root)
            (record_url,) = glob(root.url("promotions", "*.json"))
            record = json.loads(read_text(record_url))
            assert record["decision"] == "promote" and record["champion_sdr"] is None
            assert record["challenger_sdr"] == champion["sdr"]
            assert glob(root.url("shards", "vggsound", "shard-*.parquet"))
    finally:
        procs.stop_all()
    assert all(p.poll() is not None for p in procs.procs.values())
