"""ial.runtime: the device a config names, and the Dask logs a run shows."""

from __future__ import annotations

import logging

import pytest

from ial.errors import UserError
from ial.runtime import quiet_dask_shutdown, torch_device


def test_auto_and_cpu_devices_and_a_missing_cuda_named_by_field():
    import torch

    assert torch_device("cpu") == "cpu"
    assert torch_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="^eval.device: 'cuda:1' asked for"):
            torch_device("cuda:1", field="eval.device")


def test_a_closing_cluster_s_comm_closed_traceback_is_not_shown(caplog):
    import distributed  # noqa: F401  (its import sets the distributed loggers' levels)

    quiet_dask_shutdown()
    batched = logging.getLogger("distributed.batched")
    with caplog.at_level(logging.INFO, logger="distributed"):  # as distributed sets it
        try:
            raise ConnectionError("stream closed")
        except ConnectionError:
            # what distributed.batched logs when a LocalCluster's workers go away
            batched.info("Batched Comm Closed %r", "<TCP (closed)>", exc_info=True)
            batched.error("Error in batched write", exc_info=True)  # a real failure
    assert [r.getMessage() for r in caplog.records if r.name == "distributed.batched"] == [
        "Error in batched write"]
    assert logging.getLogger("distributed.scheduler").isEnabledFor(logging.INFO)  # untouched


def test_an_unretrieved_comm_timeout_at_exit_is_not_shown(caplog):
    """What asyncio logs at exit for a connect timeout of a lost worker nobody awaited (seen
    after a successful featurize against a remote scheduler with a link outage) is dropped;
    another never-retrieved error still shows."""
    quiet_dask_shutdown()
    quiet_dask_shutdown()  # idempotent: one filter
    log = logging.getLogger("asyncio")
    assert sum(type(f).__name__ == "_UnretrievedCommTimeout" for f in log.filters) == 1
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        for exc in (TimeoutError("Timeout"), ValueError("a real bug")):
            try:
                raise exc
            except Exception:
                log.error("Future exception was never retrieved\nfuture: <Future finished>",
                          exc_info=True)
    assert [r.exc_info[1].args[0] for r in caplog.records if r.name == "asyncio"] == [
        "a real bug"]


def test_local_cluster_settings_hold_distributed_s_defaults_in_a_fresh_process():
    """Taken before anything imported ``distributed``, the workers' config still holds its
    defaults (a worker started without ``distributed.admin.event-loop`` fails to start)."""
    import subprocess
    import sys

    code = ("import sys; from ial.runtime import local_cluster_kwargs; "
            "assert 'distributed' not in sys.modules; "
            "c = local_cluster_kwargs(1, 1)['config']['distributed']; "
            "print(c['admin']['event-loop'], c['worker']['profile']['enabled'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["tornado", "False"]


def test_local_cluster_workers_leave_the_terminal_s_process_group():
    """A Ctrl-C reaches a terminal's whole process group; the workers (and the ffmpeg they run)
    are out of it, and stop when the process that started them closes the cluster."""
    import os

    from distributed import Client, LocalCluster

    from ial.runtime import local_cluster_kwargs

    with LocalCluster(**local_cluster_kwargs(1, 1)) as cluster, Client(cluster) as client:
        (pid, group), = client.run(lambda: (os.getpid(), os.getpgid(0))).values()
    assert group == pid != os.getpgid(0)


def test_local_cluster_preloads_come_after_the_user_s_own():
    import dask

    from ial.runtime import local_cluster_kwargs

    with dask.config.set({"distributed.worker.preload": ["my_site.worker_setup"]}):
        preload = local_cluster_kwargs(1, 1)["config"]["distributed"]["worker"]["preload"]
    assert preload == ["my_site.worker_setup", "ial.runtime"]
    assert local_cluster_kwargs(1, 1)["config"]["distributed"]["worker"]["preload"] == [
        "ial.runtime"]


@pytest.fixture
def silent_server():
    """A loopback TCP server that accepts connections and never says a word (a wrong port: a
    service of another protocol waiting for its request). Yields its ``tcp://`` address."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_a_running_scheduler_passes_the_check_and_is_connected():
    from distributed import LocalCluster

    from ial.runtime import check_scheduler, connect_scheduler

    check_scheduler(None)  # nothing given: a LocalCluster will be started, nothing to check
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        check_scheduler(cluster.scheduler_address, timeout_s=5)
        with connect_scheduler(cluster.scheduler_address) as client:
            assert client.submit(sum, [1, 2]).result() == 3


def test_an_address_without_a_scheduler_is_one_config_error(silent_server):
    import time

    from ial.errors import ConfigError
    from ial.runtime import check_scheduler
    from tests.conftest import free_port

    for address, why in ((silent_server, "no answer within 1 s"),
                         (f"tcp://127.0.0.1:{free_port()}", ""),
                         ("foo://host:8786", "unknown address scheme 'foo'")):
        started = time.monotonic()
        with pytest.raises(ConfigError, match=f"^config field 'dask_address': no Dask "
                                              f"scheduler at '{address}' \\(.*{why}"):
            check_scheduler(address, timeout_s=1)
        assert time.monotonic() - started < 10  # bounded, even where nothing ever replies
