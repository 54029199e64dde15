"""benchmarks/adversary_unsupervised.py: the unsupervised IAL vs CMS path on a tiny corpus."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from ial.demo.realistic_corpus import missing_tools
from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "adversary_unsupervised.py"


@pytest.mark.slow
@pytest.mark.skipif(bool(missing_tools()), reason="needs " + ", ".join(missing_tools()))
def test_quick_run_trains_both_models_on_solo_pair_duets_and_ends_with_the_result_lines(
        tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--work", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for row in ("ial_unsup", "cms_unsup", "oracle_irm", "oracle_ibm", "mixture"):
        assert re.search(rf"^{row}\s+-?\d+\.\d\d", run.stdout, re.M), row
    for run_name in ("ial_unsup-s3-12steps", "cms_unsup-s3-12steps"):
        saved = (tmp_path / "root" / "checkpoints" / run_name / "config.yaml").read_text()
        assert "mode: unsupervised" in saved and "duets: solo_pairs" in saved
    assert "lambda_ind: 0.0\n" in (tmp_path / "root" / "checkpoints" / "cms_unsup-s3-12steps"
                                   / "config.yaml").read_text()
    assert "95 % paired bootstrap CI" in run.stdout
    last = run.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"RESULT unsupervised_ial_minus_cms_sdr=-?[\d.]+ target>=0.5", last)


def test_bad_values_are_one_error_line(tmp_path):
    work = tmp_path / "not-a-folder"
    work.write_text("x")
    for argv, line in [(["--work", str(work)], f"--work {work} is not a directory"),
                       (["--steps", "0", "--work", str(tmp_path)], "--steps 0: must be >= 1")]:
        proc = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 1 and proc.stderr.strip() == f"Error: {line}", proc.stderr
