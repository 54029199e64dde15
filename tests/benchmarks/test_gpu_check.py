"""benchmarks/gpu_check.sh: on a machine without a GPU, one clear line; the CPU dry run of every
step (featurize, a DeepSpeed training step, evaluate, the layout comparison) ends with its RESULT
lines."""

from __future__ import annotations

import subprocess

import pytest
import torch

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible here")
def test_without_a_gpu_it_says_so_in_one_line():
    run = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 1
    assert run.stderr.strip().startswith("Error: no CUDA device is visible")
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_cpu_dry_run_runs_every_step(tmp_path):
    run = subprocess.run([str(SCRIPT), "--quick", "--work", str(tmp_path)], capture_output=True,
                         text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert lines[-2].startswith("RESULT gpu_feature_rel_err=")
    assert lines[-1] == "RESULT gpu_eval_max_db_diff=0.0000 target<=0.01"
    assert "train: 1 rank(s)" in run.stdout and (tmp_path / "root" / "checkpoints").is_dir()
    assert "channels-last / NCHW training-step speed configs/train/realistic.yaml x" in run.stdout
