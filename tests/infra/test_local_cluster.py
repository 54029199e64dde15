"""Every stage across a real three-host network on one machine (``infra/local-cluster/up``):
addresses from the environment and config only, no code path special to the test.

Hosts are network namespaces on a bridge: ``ial-head`` (S3 API, Dask scheduler, Prefect server,
the video server), ``ial-node1`` and ``ial-node2`` (Dask workers, trainer ranks over ssh/pdsh).
Needs root (CI runs as root); skipped with the reason where namespaces cannot be made.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

UP, DOWN = REPO / "infra" / "local-cluster" / "up", REPO / "infra" / "local-cluster" / "down"
STATE = REPO / "infra" / "local-cluster" / ".state"
VENV = REPO / ".venv" / "bin"
BUCKET = "cluster"
ROOT = f"s3://{BUCKET}/ial"
TINY_TRAIN = {
    "model": {"visual_channels": 512, "embed_dim": 8, "audio_channels": [4, 4, 4, 4],
              "common_hidden": 8},
    "method": {"bank_size": 16, "critic_ndf": 4, "critic_input_size": [16, 16],
               "lambda_ind_schedule": "constant", "lambda_av": 0, "separator_every": 1},
    "batch_size": 4, "segment_samples": 4095, "val_every": 3, "val_mixtures": 2,
    "checkpoint_every": 2, "log_every": 1, "num_workers": 0, "seed": 5, "dist_timeout_s": 60,
    "val_fraction": 0.0,
}


def cannot_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs the cluster tests as root)"
    probe = subprocess.run(["ip", "netns", "add", "ial-probe"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace here: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", "ial-probe"], capture_output=True)
    return None


class Cluster:
    """Runs commands on the cluster's hosts (``.state/run-on HOST CMD``)."""

    def run(self, host: str, *cmd, timeout: float = 300, check: bool = True, env=None):
        proc = subprocess.run([str(STATE / "run-on"), host, *map(str, cmd)], capture_output=True,
                              text=True, timeout=timeout, cwd=REPO, env=env)
        if check and proc.returncode != 0:
            raise AssertionError(f"{host}: {' '.join(map(str, cmd))} → {proc.returncode}\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def start(self, host: str, *cmd, log: str) -> subprocess.Popen:
        return subprocess.Popen([str(STATE / "run-on"), host, *map(str, cmd)], cwd=REPO,
                                stdout=open(STATE / "logs" / log, "w"), stderr=subprocess.STDOUT,
                                start_new_session=True)

    def python(self, host: str, code: str, **kw):
        return self.run(host, VENV / "python", "-c", code, **kw)

    def pids(self, host: str, pattern: str) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", host], capture_output=True, text=True)
        found = []
        for pid in out.stdout.split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if re.search(pattern, cmdline):
                found.append(int(pid))
        return found

    def restart_s3_endpoint(self, down_s: float) -> None:
        """Stop the S3 endpoint, wait, start it again (as a service restart looks to clients)."""
        for pid in self.pids("ial-head", r"tcp_proxy\.py"):
            os.kill(pid, signal.SIGKILL)
        time.sleep(down_s)
        self.start("ial-head", VENV / "python", REPO / "infra/local-cluster/tcp_proxy.py",
                   "10.77.0.1:5000", "127.0.0.1:5001", log="s3-endpoint-2.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.python("ial-head", "import socket; socket.create_connection(("
                           "'10.77.0.1', 5000), 1)", check=False).returncode == 0:
                return
            time.sleep(0.3)
        raise AssertionError("the S3 endpoint did not come back")


@pytest.fixture(scope="module")
def cluster(demo_corpus):
    reason = cannot_make_namespaces()
    if reason:
        pytest.skip(reason)
    up = subprocess.run([str(UP), "--services"], capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    c = Cluster()
    c.python("ial-head", f"import boto3; boto3.client('s3').create_bucket(Bucket='{BUCKET}')")
    server = c.start("ial-head", VENV / "python", "-m", "ial.demo.video_server",
                     demo_corpus.out_dir, "--host", "10.77.0.1", "--port", "8000",
                     log="video-server.log")
    wait = "import socket; socket.create_connection(('10.77.0.1', 8000), 1)"
    deadline = time.monotonic() + 30
    while c.python("ial-head", wait, check=False).returncode != 0:
        assert time.monotonic() < deadline, "the video server did not start"
        time.sleep(0.3)
    try:
        yield c
    finally:
        server.kill()
        subprocess.run([str(DOWN)], capture_output=True, timeout=120)


def _s3_ls(c: Cluster, prefix: str) -> list[str]:
    code = (f"import s3fs, json; print(json.dumps(sorted(s3fs.S3FileSystem("
            f"use_listings_cache=False).find('{prefix}'))))")
    return json.loads(c.python("ial-head", code).stdout.strip().splitlines()[-1])


def _clip_ids(c: Cluster, prefix: str, name_re: str) -> list[str]:
    """The clip_id column of every Parquet file under s3://``prefix`` whose key matches
    ``name_re``, read on ial-head with the project's one Parquet reader."""
    code = ("import json, re, s3fs; from ial.parquet_reading import read_parquet; "
            "keys = [k for k in "
            f"s3fs.S3FileSystem().find('{prefix}') if re.search(r'{name_re}', k)]; "
            "print(json.dumps([i for k in keys for i in "
            "read_parquet('s3://' + k, columns=['clip_id'])['clip_id'].to_pylist()]))")
    return json.loads(c.python("ial-head", code).stdout.strip().splitlines()[-1])


def _start_until_written(cmd: list, prefix: str) -> subprocess.Popen:
    """Start ``cmd`` on ial-head; return once it has written under ``prefix`` on S3.

    One watcher process on ial-head polls S3 every 50 ms, started (Python and s3fs imported, a
    first listing made) before ``cmd``: starting a new Python per poll took seconds on a busy
    2-core machine, and a short run could finish between two polls, before its fault."""
    watch = (f"import s3fs, time; fs = s3fs.S3FileSystem(use_listings_cache=False); "
             f"fs.find('{prefix}'); print('ready', flush=True)\n"
             f"while not fs.find('{prefix}'): time.sleep(0.05)\nprint('written', flush=True)")
    watcher = subprocess.Popen([str(STATE / "run-on"), "ial-head", str(VENV / "python"), "-c",
                                watch], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout.readline().strip() == "ready", "the S3 watcher did not start"
        run = subprocess.Popen([str(STATE / "run-on"), "ial-head", *map(str, cmd)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_until(lambda: watcher.poll() is not None or run.poll() is not None, 120,
                   f"nothing under {prefix}", interval=0.05)
    finally:
        watcher.kill()
    assert run.poll() is None, run.stdout.read()[-3000:]  # still running: the fault hits it
    return run


def test_ingest_runs_on_the_node_workers_into_s3_and_survives_an_s3_restart(cluster, demo_corpus,
                                                                            tmp_path):
    manifest = tmp_path / "vggsound.csv"
    manifest.write_text("".join(f"{e.video_id},{e.start_seconds:g},\"{e.label}, solo\","
                                f"{e.split}\n" for e in demo_corpus.entries))
    cmd = [VENV / "ial", "ingest", "--manifest", manifest, "--root", ROOT, "--no-prefect",
           "--no-progress", "--url-template", "http://ial-head:8000/videos/{video_id}.mp4",
           "--dask-address", "tcp://ial-head:8786", "--batch-size", "1",
           "--set", "clip_seconds=3", "--set", "retries=2", "--set", "backoff=1"]
    run = _start_until_written(cmd, f"{BUCKET}/ial/clips/vggsound/index")
    cluster.restart_s3_endpoint(down_s=4)  # mid-ingest: the S3 API goes away and comes back
    out, _ = run.communicate(timeout=300)
    # whatever that restart cost is retried: a rerun (failed clips retried) finishes everything
    again = cluster.run("ial-head", *cmd, "--retry-failed")
    summary = json.loads(again.stdout[again.stdout.index("{"):])
    n = len(demo_corpus.entries)
    assert summary["ok"] == n, (out[-2000:], summary)
    clips = [p for p in _s3_ls(cluster, f"{BUCKET}/ial/clips/vggsound") if p.endswith(".mp4")]
    assert len(clips) == n and len(set(clips)) == n  # every clip once, no partial object
    ids = _clip_ids(cluster, f"{BUCKET}/ial/clips/vggsound/index", r"\.parquet$")
    assert len(ids) == len(set(ids)) == n  # one index row per clip
    stats = [json.loads(cluster.python("ial-head", f"import s3fs; print(s3fs.S3FileSystem()"
                                       f".cat('{p}').decode())").stdout)
             for p in _s3_ls(cluster, f"{BUCKET}/ial/clips/vggsound/stats")
             if re.search(r"-\d{5}\.json$", p)]
    workers = {s["worker"].split("://")[-1].rsplit(":", 1)[0] for s in stats}
    assert workers <= {"10.77.0.11", "10.77.0.12"} and workers, workers  # batches ran on nodes


def test_featurize_on_both_nodes_with_a_link_outage_every_clip_once(cluster, demo_corpus):
    cmd = [VENV / "ial", "featurize", "--root", ROOT, "--dataset", "vggsound", "--no-prefect",
           "--no-progress", "--dask-address", "tcp://ial-head:8786",
           "--config", REPO / "configs/featurize/demo.yaml", "--set", "clips_per_shard=1",
           "--set", "frame_times=[0.5,1.5,2.5]"]  # inside the 3 s clips ingested above
    run = _start_until_written(cmd, f"{BUCKET}/ial/shards/vggsound/_stats")
    subprocess.run(["ip", "-n", "ial-node2", "link", "set", "eth0", "down"], check=True)
    time.sleep(20)  # node2 is unreachable: the scheduler gives it up, its shards go to node1
    subprocess.run(["ip", "-n", "ial-node2", "link", "set", "eth0", "up"], check=True)
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out[-3000:]
    summary = json.loads(out[out.index("{"):])
    n = len(demo_corpus.entries)
    assert summary["dataset_rows"] == n and summary["shards_total"] == n
    ids = _clip_ids(cluster, f"{BUCKET}/ial/shards/vggsound", r"/shard-\d+\.parquet$")
    assert len(ids) == len(set(ids)) == n  # every clip exactly once


def _train_config(tmp_path: Path, name: str, steps: int) -> Path:
    cfg = dict(TINY_TRAIN, root=ROOT, dataset="vggsound", run_name=name, steps=steps)
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def _train_result(stdout: str) -> dict:
    """The result ``ial train`` prints last (a JSON object; its first line is a bare ``{``)."""
    return json.loads(stdout[[m.start() for m in re.finditer(r"^\{$", stdout, re.M)][-1]:])


def _losses(c: Cluster, run: str) -> list[float]:
    text = c.python("ial-head", f"import s3fs; print(s3fs.S3FileSystem().cat("
                    f"'{BUCKET}/ial/checkpoints/{run}/metrics.jsonl').decode())").stdout
    return [r["loss"] for r in map(json.loads, filter(None, text.splitlines()))
            if r.get("split") == "train" and "loss" in r]


def test_training_across_two_nodes_matches_two_local_processes_and_resumes(cluster, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("ial-node1 slots=1\nial-node2 slots=1\n")
    # the reference: 2 processes on one host
    cluster.run("ial-head", VENV / "ial", "train", "--config", _train_config(tmp_path, "local", 6),
                "--num-procs", "2", "--no-progress", timeout=400)
    # one rank per node, started over ssh by DeepSpeed's pdsh launcher
    cluster.run("ial-head", VENV / "ial", "train", "--config", _train_config(tmp_path, "pdsh", 6),
                "--hostfile", hostfile, "--num-procs", "1", "--no-progress", timeout=400)
    # the Kubernetes way: every node starts its own rank (--no-ssh --node-rank)
    cfg = _train_config(tmp_path, "nossh", 6)
    ranks = [cluster.start(h, VENV / "ial", "train", "--config", cfg, "--hostfile", hostfile,
                           "--num-procs", "1", "--no-ssh", "--node-rank", r, "--master-addr",
                           "ial-node1", "--master-port", "29561", "--no-progress",
                           log=f"nossh-{h}.log") for r, h in enumerate(("ial-node1", "ial-node2"))]
    assert [p.wait(400) for p in ranks] == [0, 0], (STATE / "logs" / "nossh-ial-node2.log"
                                                     ).read_text()[-3000:]
    local, pdsh, nossh = (_losses(cluster, r) for r in ("local", "pdsh", "nossh"))
    assert len(local) == 6 and pdsh == pytest.approx(local, rel=1e-4, abs=1e-5)
    assert nossh == pytest.approx(local, rel=1e-4, abs=1e-5)

    # kill node2's rank mid-run (once its first checkpoint is written: step 2 of 16): the run
    # fails; the same command again resumes exactly
    cfg = _train_config(tmp_path, "killed", 16)
    cmd = [VENV / "ial", "train", "--config", cfg, "--hostfile", hostfile, "--num-procs", "1",
           "--no-progress"]
    first = _start_until_written(cmd, f"{BUCKET}/ial/checkpoints/killed/deepspeed/latest.json")
    for pid in cluster.pids("ial-node2", r"-m ial\.training"):
        os.kill(pid, signal.SIGKILL)
    out, _ = first.communicate(timeout=300)
    assert first.returncode != 0, out[-3000:]
    again = _train_result(cluster.run("ial-head", *cmd, timeout=400).stdout)
    assert again["step"] == 16 and 2 <= again["resumed_from_step"] < 16, again  # not from scratch
    cluster.run("ial-head", VENV / "ial", "train", "--config", _train_config(tmp_path, "whole", 16),
                "--hostfile", hostfile, "--num-procs", "1", "--no-progress", timeout=400)
    code = ("import torch, s3fs, io; fs = s3fs.S3FileSystem(); w = [torch.load(io.BytesIO(fs.cat("
            f"'{BUCKET}/ial/checkpoints/' + r + '/model.pt')), weights_only=True)['state_dict'] "
            "for r in ('killed', 'whole')]; print(all(torch.equal(w[0][k], w[1][k]) for k in "
            "w[0]))")
    assert cluster.python("ial-head", code).stdout.strip().endswith("True")


def test_a_stop_on_the_head_saves_both_nodes_at_one_step(cluster, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("ial-node1 slots=1\nial-node2 slots=1\n")
    cfg = _train_config(tmp_path, "stopped", 400)
    cmd = [VENV / "ial", "train", "--config", cfg, "--hostfile", hostfile, "--num-procs", "1"]
    # with its progress bar: rank 0 writes into its ssh connection, which closes on the stop
    run = _start_until_written(cmd, f"{BUCKET}/ial/checkpoints/stopped/deepspeed/latest.json")
    os.kill(run.pid, signal.SIGTERM)  # a scheduler's stop, to `ial train` on the head only
    out, _ = run.communicate(timeout=150)
    assert run.returncode == 1 and "Traceback" not in out, out[-3000:]
    stopped = re.search(r"^Error: training 'stopped' stopped by SIG(TERM|HUP) at step (\d+) of "
                        r"400, saved there in s3://cluster/ial/checkpoints/stopped: run the same "
                        r"command again to resume$", out, re.M)
    assert stopped, out[-3000:]
    wait_until(lambda: not any(cluster.pids(h, r"ial\.training|deepspeed")
                               for h in ("ial-node1", "ial-node2")), 40, "ranks left on the nodes")
    # saved at that step: what the same command resumes from (a resume across the nodes is
    # tested above)
    latest = cluster.python("ial-head", "import s3fs; print(s3fs.S3FileSystem().cat("
                            f"'{BUCKET}/ial/checkpoints/stopped/deepspeed/latest.json').decode())")
    latest = latest.stdout
    assert json.loads(latest)["step"] == int(stopped.group(2)), latest


def test_evaluate_from_node2_on_the_checkpoint_in_s3(cluster):
    out = cluster.run("ial-node2", VENV / "python", "-m", "ial.evaluate", "--checkpoint",
                      f"{ROOT}/checkpoints/pdsh/model.pt", "--data", f"{ROOT}/shards/vggsound",
                      "--set", "split=train", "--set", "n_per_combination=1",
                      "--set", "num_examples=0", "--set", "window_hop=null",
                      "--out", f"{ROOT}/reports/from-node2", "--no-progress")
    assert "model" in out.stdout
    assert f"{BUCKET}/ial/reports/from-node2/results.json" in _s3_ls(
        cluster, f"{BUCKET}/ial/reports/from-node2")


def _api(c: Cluster, path: str):
    """GET ``path`` of the Prefect API on ial-head (from inside the cluster); None while it does
    not answer."""
    code = ("import httpx, json\ntry:\n    r = httpx.get('http://ial-head:4200/api" + path
            + "', timeout=5)\n    print(json.dumps(r.json() if r.status_code == 200 else None))"
            "\nexcept httpx.HTTPError:\n    print('null')")
    out = c.python("ial-head", code, check=False).stdout.strip()
    return json.loads(out.splitlines()[-1]) if out else None


def _restart_prefect_server(c: Cluster, down_s: float) -> None:
    for pid in c.pids("ial-head", r"prefect server start|uvicorn"):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(down_s)
    c.start("ial-head", VENV / "prefect", "server", "start", "--host", "10.77.0.1", "--port",
            "4200", log="prefect-server-2.log")


def test_a_deployment_run_from_node1_survives_a_prefect_server_restart(cluster, demo_corpus,
                                                                        tmp_path):
    wait_until(lambda: _api(cluster, "/health") is True, 120, "the Prefect API is not up")
    manifest = tmp_path / "vggsound.csv"
    manifest.write_text("".join(f"{e.video_id},{e.start_seconds:g},\"{e.label}\",{e.split}\n"
                                for e in demo_corpus.entries))
    root = f"s3://{BUCKET}/prefect"
    # the Prefect worker role: `ial serve` on node1; the run's batches go to the Dask workers
    cluster.start("ial-node1", VENV / "ial", "serve", "--only", "ingest/vggsound", "--root", root,
                  "--dask-address", "tcp://ial-head:8786", log="serve.log")
    wait_until(lambda: _api(cluster, "/deployments/name/ingest/vggsound"), 120,
          "ingest/vggsound is not registered (serve.log: "
          + (STATE / "logs" / "serve.log").read_text()[-2000:] + ")")
    params = ["--param", f"manifest={manifest}", "--param",
              'overrides=["url_template=http://ial-head:8000/videos/{video_id}.mp4", '
              '"clip_seconds=3", "batch_size=1", "backoff=1"]']
    started = cluster.run("ial-head", VENV / "prefect", "deployment", "run", "ingest/vggsound",
                          *params)
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)

    def state():
        run = _api(cluster, f"/flow_runs/{run_id}")
        return run and run["state"]

    wait_until(lambda: (state() or {}).get("type") == "RUNNING", 180, "the flow run did not start")
    killed_at = time.time()
    _restart_prefect_server(cluster, down_s=3)  # the API is gone for ~3 s + its start-up time
    final = wait_until(lambda: (lambda s: s if s and s["type"] not in ("SCHEDULED", "PENDING",
                                                                   "RUNNING") else None)(state()),
                  300, "the flow run never reached a final state (a silent loss)", interval=2)
    print(f"flow run after the Prefect server restart: {final['type']} {final['message']!r}")
    from datetime import datetime

    ended = _api(cluster, f"/flow_runs/{run_id}")["end_time"]
    assert datetime.fromisoformat(ended.replace("Z", "+00:00")).timestamp() > killed_at + 3
    if final["type"] != "COMPLETED":  # failed, then with its reason, and a rerun finishes it
        assert final["message"], final
        again = cluster.run("ial-head", VENV / "prefect", "deployment", "run", "ingest/vggsound",
                            *params, "--watch", timeout=400)
        assert "COMPLETED" in again.stdout.upper(), again.stdout[-2000:]
    n = len(demo_corpus.entries)
    clips = [p for p in _s3_ls(cluster, f"{BUCKET}/prefect/clips/vggsound") if p.endswith(".mp4")]
    assert len(clips) == len(set(clips)) == n  # every clip, once
    ids = _clip_ids(cluster, f"{BUCKET}/prefect/clips/vggsound/index", r"\.parquet$")
    assert len(ids) == len(set(ids)) == n


def test_down_removes_everything_it_made_even_after_a_crash(cluster):
    # a "crash": processes still running on every host (dask workers, sshd, servers)
    assert cluster.pids("ial-node1", "dask") and cluster.pids("ial-node2", "sshd")
    done = subprocess.run([str(DOWN)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "ial-" not in netns
    assert not any(Path("/etc/netns").glob("ial-*")) and not STATE.exists()
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert "veth-ial" not in links
