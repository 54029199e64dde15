"""What the flows share: the Prefect API they talk to (shared with every process they start),
the Dask task runner their fanned-out tasks run on, and how a user error ends a flow (which of
their tasks' failures are worth a retry: ``retry_unless_user_error``).

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
        check_api()
        yield configured
        return
    server = _server_outside_the_terminal_group()
    timeout = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    server.start(timeout=int(timeout))
    url = server.api_url
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        # The server itself is stopped by Prefect's exit hook, after its log handler has
        # flushed the last records to it.
        os.environ.pop("PREFECT_API_URL", None)


def check_api(timeout_s: float = 10.0) -> None:
    """With ``PREFECT_API_URL`` set, check that something answers there (its ``/health``; any
    HTTP reply counts, an auth error included) before a flow starts: Prefect itself gives a
    traceback, ``RuntimeError: Failed to reach API``, from inside its client. Unreachable is a
    ``UserError`` naming the URL. Unset: nothing to check (a temporary server will start)."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    from ial.errors import UserError, first_line

    url = PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL")
    if not url:
        return
    try:
        httpx.get(url.rstrip("/") + "/health", timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise UserError(f"Prefect API {url} (PREFECT_API_URL): cannot reach it "
                        f"({first_line(exc)}); start the server there (prefect server start), "
                        "fix the URL, or unset PREFECT_API_URL to run on a temporary server"
                        ) from None


def _server_outside_the_terminal_group():
    """Prefect's temporary API server (``SubprocessASGIServer``), its process started in a
    session of its own. A Ctrl-C reaches the terminal's whole process group: the server died of
    it at once, while the flow it serves was still reporting its way out, and every report then
    failed with a traceback and retried for minutes (5 min measured on ``ial demo``). Out of the
    group, the server stays up until the flow has finished and Prefect's exit hook stops it."""
    import functools
    import subprocess
    import types

    from prefect.server.api import server as prefect_server

    class Server(prefect_server.SubprocessASGIServer):
        def _run_uvicorn_command(self):
            own_session = types.SimpleNamespace(**vars(subprocess))
            own_session.Popen = functools.partial(subprocess.Popen, start_new_session=True)
            saved, prefect_server.subprocess = prefect_server.subprocess, own_session
            try:
                return super()._run_uvicorn_command()
            finally:
                prefect_server.subprocess = saved

    return Server()


def dask_task_runner(address: str | None, cluster_kwargs: dict):
    """A ``DaskTaskRunner`` on the scheduler at ``address``, else on a LocalCluster started with
    ``cluster_kwargs`` (the stage's own: ``ial.runtime.local_cluster_kwargs``)."""
    from prefect_dask import DaskTaskRunner

    from ial.runtime import quiet_dask_shutdown

    quiet_dask_shutdown()
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=cluster_kwargs)


def retry_unless_user_error(task, task_run, state) -> bool:
    """A task's ``retry_condition_fn``: retry an outage (a crashed job, a lost worker, a
    throttled server), never a ``UserError``: bad input fails the same way again, and a training
    stopped by a signal (``TrainingStopped``) must stay stopped."""
    from ial.errors import UserError

    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - a result that cannot be read: retry as before
        return True
    return not isinstance(exc, UserError)


def fail_on_user_error(fn):
    """Wrap a flow function: a ``UserError`` (bad manifest, config, bucket, ...) ends the run in a
    Failed state with its one-line message logged, instead of Prefect logging its traceback in
    this flow and again in every parent flow. Calling the flow still raises the UserError (the
    state carries it), so ``ial <stage>`` prints ``Error: <message>``."""
    import functools
    import inspect
    import typing

    from ial.errors import UserError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from prefect import get_run_logger
        from prefect.states import Failed

        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            if not getattr(exc, "_logged_by_flow", False):
                get_run_logger().error("Error: %s", exc)
                exc._logged_by_flow = True
            return Failed(message=str(exc), data=exc)

    # Prefect builds the parameter model from the signature: give it the annotations resolved in
    # the flow's own module (they are strings under `from __future__ import annotations`).
    hints = typing.get_type_hints(fn)
    sig = inspect.signature(fn)
    wrapper.__signature__ = sig.replace(
        parameters=[p.replace(annotation=hints.get(p.name, p.annotation))
                    for p in sig.parameters.values()],
        return_annotation=hints.get("return", sig.return_annotation))
    wrapper.__annotations__ = hints
    return wrapper
