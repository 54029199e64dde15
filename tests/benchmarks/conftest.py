"""The quality benchmarks' tiny corpus, built once per session and copied for each test."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="session")
def quick_prepared(tmp_path_factory) -> Path:
    """A ``--work`` folder where ``benchmarks/separation_quality.py --quick --prepare-only`` built
    the tiny realistic corpus, served it, ingested and featurized it (~30 s): the whole data path,
    from nothing, once for every quality benchmark test."""
    work = tmp_path_factory.mktemp("quick-work")
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "separation_quality.py"),
                          "--quick", "--prepare-only", "--work", str(work)],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert re.search(r"^data: \d+ manifest rows \([1-9]\d* missing videos\) → ingest "
                     r"\{'ok': \d+, 'unavailable': [1-9]\d*\} → \d+ shard rows", run.stdout, re.M)
    return work


@pytest.fixture
def quick_work(quick_prepared, tmp_path) -> Path:
    """A copy of ``quick_prepared`` of the test's own: corpus, clips and shards (a benchmark run
    resumes them in ~1 s), and no trainings yet."""
    work = tmp_path / "work"
    shutil.copytree(quick_prepared, work)
    return work
