"""benchmarks/train_step.py's loader measurement from an S3 root (a moto server on loopback):
the shards are written under a new folder there, read by the real ShardStream, then removed."""

from __future__ import annotations

import argparse
import subprocess
import sys

from benchmarks.train_step import bench_loader
from ial.storage import Storage
from tests.conftest import REPO


def test_the_loader_reads_its_shards_from_s3_and_leaves_nothing_there(s3_root, capsys):
    args = argparse.Namespace(loader_clips=32, batch_size=4, workers=1)
    rate = bench_loader(args, "configs/model/demo.yaml", s3_root)
    assert rate > 0
    out = capsys.readouterr().out
    assert f"loader ({s3_root}): 1 workers, 32 clips" in out
    assert Storage(s3_root).listdir() == []  # its folder removed


def test_a_loader_root_in_a_missing_bucket_is_one_error_line(s3_root):
    bucket = s3_root.split("/")[2]
    proc = subprocess.run([sys.executable, "benchmarks/train_step.py", "--quick",
                           "--loader-root", f"s3://{bucket}-gone/x"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"Error: --loader-root s3://{bucket}-gone/x: bucket"), lines
