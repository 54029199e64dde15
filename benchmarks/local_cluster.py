"""Benchmark: the stages on a three-host cluster (``infra/local-cluster``) vs on one host.

Brings the namespace cluster up (root), ingests a generated corpus from the video server on
``ial-head`` into ``s3://`` on ``ial-head`` with the Dask workers of ``ial-node1``/``ial-node2``,
then measures side by side, on the same data:

- featurize: ``ial featurize --dask-address tcp://ial-head:8786`` (2 remote workers, frames and
  shards over the network) vs ``ial featurize`` with its own LocalCluster of 2 workers on
  ``ial-head`` (same S3), clips/s from each run's summary (the shards are removed in between);
- training: ``ial train --hostfile`` with one rank per node (gloo over the namespace link,
  started by DeepSpeed's pdsh launcher) vs ``--num-procs 2`` on ``ial-head``, median step time
  (same config, same data).

All hosts share this machine's cores, so the ratios measure what the network path and the
remote placement cost, not more compute. Last lines::

    RESULT cluster_featurize_remote_vs_local=<x> target>=0.8
    RESULT cluster_step_time_2hosts_vs_local=<x> target<=1.25

Usage (root): ``python benchmarks/local_cluster.py [--quick] [--keep-up]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
STATE = REPO / "infra" / "local-cluster" / ".state"
VENV = REPO / ".venv" / "bin"
BUCKET = "bench"
ROOT = f"s3://{BUCKET}/ial"


def on(host: str, *cmd, timeout: float = 1200) -> str:
    """Run ``cmd`` on ``host`` of the cluster; its stdout (raises with the output on failure)."""
    proc = subprocess.run([str(STATE / "run-on"), host, *map(str, cmd)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{host}: {' '.join(map(str, cmd))} → {proc.returncode}\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def last_json(text: str) -> dict:
    return json.loads(text[text.index("{"):])


def s3_python(code: str) -> str:
    return on("ial-head", VENV / "python", "-c", "import s3fs; fs = s3fs.S3FileSystem(); " + code)


def featurize_rate(dask_address: str | None) -> dict:
    s3_python(f"fs.rm('{BUCKET}/ial/shards', recursive=True) if fs.exists('{BUCKET}/ial/shards') "
              "else None")
    cmd = [VENV / "ial", "featurize", "--root", ROOT, "--dataset", "demo", "--no-prefect",
           "--no-progress", "--config", REPO / "configs/featurize/demo.yaml",
           "--set", "clips_per_shard=4", "--set", "n_workers=2"]
    if dask_address:
        cmd += ["--dask-address", dask_address]
    return last_json(on("ial-head", *cmd))


def step_time(hostfile: Path | None, run: str, steps: int, work: Path) -> float:
    cfg = work / f"{run}.yaml"
    cfg.write_text(json.dumps({
        "root": ROOT, "dataset": "demo", "run_name": run, "steps": steps, "batch_size": 6,
        "val_every": 10 * steps, "checkpoint_every": 10 * steps, "log_every": 1, "num_workers": 0,
        "val_fraction": 0.0, "model": str(REPO / "configs/model/demo.yaml"),
        "method": str(REPO / "configs/method/demo.yaml"),
        "segment_samples": 32767, "seed": 0}))
    cmd = [VENV / "ial", "train", "--config", cfg, "--no-progress"]
    cmd += ["--hostfile", hostfile, "--num-procs", "1"] if hostfile else ["--num-procs", "2"]
    on("ial-head", *cmd)
    text = s3_python(f"print(fs.cat('{BUCKET}/ial/checkpoints/{run}/metrics.jsonl').decode())")
    rates = [r["samples_per_s"] for r in map(json.loads, filter(None, text.splitlines()))
             if r.get("split") == "train" and "samples_per_s" in r]
    return statistics.median([6 * 2 / r for r in rates[1:]])  # s per step (2 ranks × 6 clips)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4 clips, 6 training steps")
    p.add_argument("--keep-up", action="store_true", help="leave the cluster running")
    p.add_argument("--work", default=str(REPO / "data" / "bench-cluster"))
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("Error: the local cluster needs root (network namespaces)")
    from ial.demo.corpus import generate_corpus

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    n_per_class = 2 if a.quick else 16
    corpus = generate_corpus(str(work / f"corpus-{n_per_class}"), classes=["violin", "flute"],
                             videos_per_class=n_per_class, seconds=13.0, seed=3, workers=2)
    subprocess.run([str(REPO / "infra/local-cluster/up"), "--services"], check=True,
                   stdout=subprocess.DEVNULL)
    server = None
    try:
        s3_python(f"import boto3; boto3.client('s3').create_bucket(Bucket='{BUCKET}')")
        server = subprocess.Popen([str(STATE / "run-on"), "ial-head", VENV / "python", "-m",
                                   "ial.demo.video_server", corpus.out_dir, "--host", "10.77.0.1",
                                   "--port", "8000"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(3)
        ingested = last_json(on(
            "ial-head", VENV / "ial", "ingest", "--manifest", corpus.manifest, "--root", ROOT,
            "--no-prefect", "--no-progress", "--config", REPO / "configs/ingest/demo.yaml",
            "--set", "url_template=http://ial-head:8000/videos/{video_id}.mp4",
            "--dask-address", "tcp://ial-head:8786", "--batch-size", "2"))
        print(f"ingest on the node workers: {ingested['by_status']}")
        remote = featurize_rate("tcp://ial-head:8786")
        local = featurize_rate(None)
        print(f"featurize {remote['rows_written']} clips: 2 remote workers "
              f"{remote['clips_per_second']:.2f} clips/s, 2 local workers "
              f"{local['clips_per_second']:.2f} clips/s")
        hostfile = work / "hostfile"
        hostfile.write_text("ial-node1 slots=1\nial-node2 slots=1\n")
        steps = 6 if a.quick else 30
        local_s = step_time(None, "bench-local", steps, work)
        hosts_s = step_time(hostfile, "bench-2hosts", steps, work)
        print(f"training step (demo model, 2 ranks × 6 clips): 2 hosts {hosts_s:.3f} s, "
              f"2 local processes {local_s:.3f} s (median of {steps - 1})")
    finally:
        if server:
            server.kill()
        if not a.keep_up:
            subprocess.run([str(REPO / "infra/local-cluster/down")], capture_output=True)
    ratio = remote["clips_per_second"] / local["clips_per_second"]
    print(f"RESULT cluster_featurize_remote_vs_local={ratio:.2f} target>=0.8")
    print(f"RESULT cluster_step_time_2hosts_vs_local={hosts_s / local_s:.2f} target<=1.25")


if __name__ == "__main__":
    main()
