"""Fixtures shared by the whole suite: environment, free ports, a moto S3 server on loopback, the
demo corpus and its loopback video server (``ial.demo``: used by the ingest, flow, separate and
evaluation tests).

Stage-specific fixtures live in the conftest.py of the test folder that needs them.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Set before anything imports prefect/deepspeed/torch.
_STATE = Path(tempfile.gettempdir()) / f"ial-tests-{os.getuid()}"
os.environ.setdefault("PREFECT_HOME", str(_STATE / "prefect"))
Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".torch_extensions"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from ial.runtime import free_port  # noqa: E402,F401  (the tests' servers take their ports here)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):
    """``predicate()``'s first truthy value, polled every ``interval`` s; TimeoutError naming
    ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} after {timeout}s")


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited early with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


DISTRIBUTED_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(scope="module", autouse=True)
def distributed_env_stays_in_its_module():
    """What a module's in-process training sets for torch.distributed (``single_process_env``:
    RANK, MASTER_PORT, ...) is undone after it: a later module's training subprocess would
    inherit it and bind the MASTER_PORT this process's group still holds (EADDRINUSE)."""
    saved = {key: os.environ.get(key) for key in DISTRIBUTED_ENV}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def moto_server():
    """A real S3 API (moto server) on loopback. Yields its endpoint URL; sets the AWS env vars."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in
             ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
              "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing",
                      AWS_SECRET_ACCESS_KEY="testing-secret", AWS_DEFAULT_REGION="us-east-1")
    try:
        wait_for_port(port, 30, proc)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_root(moto_server):
    """A fresh bucket on the moto server; yields ``s3://<bucket>/ial``."""
    import boto3

    bucket = f"test-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=bucket)
    yield f"s3://{bucket}/ial"


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (SQLite) for every flow test in the session (~20 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
        # Leaving the harness logs "Stopping temporary server" at INFO to Prefect's console
        # handler, whose stream pytest has closed by then ("--- Logging error ---" after the
        # summary). Only that line is lost.
        logging.getLogger("prefect").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """A small generated corpus (4 classes x 2 videos, 13 s each) with its VGGSound CSV —
    ``ial.demo.corpus.CorpusInfo``."""
    from ial.demo.corpus import generate_corpus

    out = tmp_path_factory.mktemp("demo_corpus")
    return generate_corpus(str(out), videos_per_class=2, seconds=13.0, seed=0, workers=2)


@pytest.fixture
def video_server(demo_corpus):
    """A fresh Range-capable loopback HTTP server over ``demo_corpus``
    (``ial.demo.video_server.VideoServer``; ``.url_template`` for ingest, ``.script`` for
    faults)."""
    from ial.demo.video_server import VideoServer

    with VideoServer(demo_corpus.out_dir) as srv:
        yield srv
