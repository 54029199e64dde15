import os
import subprocess
import sys

import httpx
import pytest

from flows.api import shared_api


@pytest.mark.skipif(bool(os.environ.get("PREFECT_API_URL")),
                    reason="a real Prefect API is configured")
def test_shared_api_reaches_child_processes():
    with shared_api() as url:
        assert url and url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        # a child process (a Dask worker, the training job) talks to the same server
        child = subprocess.run(
            [sys.executable, "-c",
             "from prefect.settings import PREFECT_API_URL; print(PREFECT_API_URL.value())"],
            capture_output=True, text=True, check=True,
        )
        assert child.stdout.strip() == url
        # the server is out of the terminal's process group: a Ctrl-C stops the flow, which
        # still reports its way out to the server, and then Prefect stops the server
        import psutil

        server, = [p for p in psutil.Process().children() if "uvicorn" in p.cmdline()]
        assert os.getpgid(server.pid) == server.pid != os.getpgid(0)
    assert "PREFECT_API_URL" not in os.environ


def test_a_user_error_is_not_retried_an_outage_is(prefect_harness):
    from prefect import flow, task

    from flows.api import retry_unless_user_error
    from ial.training.budget import TrainingStopped

    calls = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_unless_user_error)
    def job(exc: Exception) -> None:
        calls.append(type(exc).__name__)
        raise exc

    @flow
    def run(exc: Exception) -> None:
        job(exc)

    for exc in (TrainingStopped("stopped by SIGTERM"), RuntimeError("worker lost")):
        with pytest.raises(type(exc)):
            run(exc)
    assert calls == ["TrainingStopped"] + ["RuntimeError"] * 3
