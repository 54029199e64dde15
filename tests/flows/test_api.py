import contextlib
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


@contextlib.contextmanager
def unreachable_api(monkeypatch, url: str | None):
    """PREFECT_API_URL set to ``url`` (or unset), in the environment and in Prefect's settings
    (a test harness of an earlier test may have set them)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if url:
        monkeypatch.setenv("PREFECT_API_URL", url)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield
    else:
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
        with temporary_settings(restore_defaults={PREFECT_API_URL}):
            yield


def test_an_api_url_where_nothing_answers_is_one_user_error(monkeypatch):
    from flows.api import check_api
    from ial.errors import UserError
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/api"
    with unreachable_api(monkeypatch, url):
        with pytest.raises(UserError, match=f"^Prefect API {url} \\(PREFECT_API_URL\\): "
                                            "cannot reach it"):
            check_api()
        with pytest.raises(UserError, match="cannot reach it"):  # and a configured shared_api
            with shared_api():
                pass
    with unreachable_api(monkeypatch, None):
        check_api()  # none configured: a temporary server will start, nothing to check


def test_ingest_with_an_unreachable_prefect_api_is_one_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ial.cli import main
    from tests.conftest import free_port

    manifest = tmp_path / "m.csv"
    manifest.write_text("abcdefghijk,1,violin,train\n")
    with unreachable_api(monkeypatch, f"http://127.0.0.1:{free_port()}/api"):
        result = CliRunner().invoke(main, ["ingest", "--manifest", str(manifest),
                                           "--root", str(tmp_path / "r")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: Prefect API http://")
    assert not (tmp_path / "r" / "clips").exists()
