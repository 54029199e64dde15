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
    assert "PREFECT_API_URL" not in os.environ
