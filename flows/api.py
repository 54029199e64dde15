"""The Prefect API the flows talk to, shared with every process they start.

With no ``PREFECT_API_URL`` set, Prefect starts a temporary ("ephemeral") API server in the
process that runs a flow. Processes that flow starts — Dask ``LocalCluster`` workers, the
training job — would each start a temporary server of their own (15–40 s each, with a noisy
shutdown), and their task runs would land in databases nobody looks at. ``shared_api()`` starts
the temporary server once and hands its URL to this process and to every child process, so the
whole run is recorded in one place. With ``PREFECT_API_URL`` set (a real server) it does nothing.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator


@contextlib.contextmanager
def shared_api() -> Iterator[str | None]:
    """Yield the API URL in use (None only if Prefect cannot start one)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL")
    if configured:
        yield configured
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")))
    url = server.api_url
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        # The server itself is stopped by Prefect's exit hook, after its log handler has
        # flushed the last records to it.
        os.environ.pop("PREFECT_API_URL", None)
