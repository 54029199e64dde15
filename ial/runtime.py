"""Where the current code runs, as stats and logs name it, and the Dask LocalCluster the stages
start (its workers' settings, what it logs)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
import os
import platform
import socket

# Worker settings of the LocalClusters that ingest (its flow) and featurize start. They have no
# dashboard, so the profiler's 10 ms stack samples have no reader; with the 100 ms memory monitor
# and the 20 ms event-loop tick they cost a CPU-bound worker ~4% of its throughput (measured on
# 2 cores, featurize). A cluster given by ``dask_address`` keeps its own settings
# (docs/scaling.md suggests the same ones). Each worker also starts a session of its own
# (``dask_setup`` below, run in the worker as a preload, after any the user configured).
LOCAL_WORKER_CONFIG = {"distributed.worker.profile.enabled": False,
                       "distributed.worker.memory.monitor-interval": "1s",
                       "distributed.admin.tick.interval": "500ms"}
WORKER_PRELOAD = "ial.runtime"


def dask_setup(worker) -> None:
    """A LocalCluster worker's start (Dask calls it, ``distributed.worker.preload``): leave the
    terminal's process group. A Ctrl-C reaches the whole group: the process that started the
    cluster stops on it and closes its workers, and a worker in the group got it too, and so did
    the ffmpeg it was running: a KeyboardInterrupt traceback from every worker, and a clip whose
    ffmpeg was interrupted recorded as failed in a shard the worker went on to write."""
    with contextlib.suppress(OSError):  # already a group leader: nothing to leave
        os.setsid()


def local_cluster_kwargs(n_workers: int, threads_per_worker: int, torch_threads: int = 1) -> dict:
    """Keyword arguments of a ``distributed.LocalCluster`` (or a ``DaskTaskRunner``'s
    ``cluster_kwargs``): ``n_workers`` processes × ``threads_per_worker`` threads, no dashboard,
    ``torch_threads`` as the OpenMP/MKL thread limit in their environment, and this process's
    dask config with ``LOCAL_WORKER_CONFIG`` on top, which each nanny applies in its worker
    process (whole: a nanny merges only the top level of what it is given). The scheduler's
    HTTP routes (health, metrics; no dashboard without one asked for) take a free port, not
    8787: two clusters on one host (a featurize beside an ingest) would otherwise warn that it
    is in use."""
    import dask
    import distributed  # noqa: F401  its defaults join dask.config: a snapshot taken before
    # they do leaves keys out (distributed.admin.event-loop) and no worker process starts

    preload = list(dask.config.get("distributed.worker.preload", None) or [])
    preload += [] if WORKER_PRELOAD in preload else [WORKER_PRELOAD]
    with dask.config.set({**LOCAL_WORKER_CONFIG, "distributed.worker.preload": preload}):
        config = copy.deepcopy(dask.config.config)
    threads = str(torch_threads)
    return {"n_workers": n_workers, "threads_per_worker": threads_per_worker,
            "processes": True, "dashboard_address": None, "config": config,
            "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
            "env": {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}}


def free_port() -> int:
    """A TCP port free on loopback right now (MASTER_PORT / --master_port, a test's server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect_scheduler(address: str, timeout_s: float = 10.0):
    """A ``distributed.Client`` of the running Dask scheduler at ``address`` (``dask_address``,
    ``--dask-address``), after ``check_scheduler`` found one there."""
    from distributed import Client

    check_scheduler(address, timeout_s)
    return Client(address, timeout=timeout_s)


def check_scheduler(address: str | None, timeout_s: float = 10.0) -> None:
    """Ask the Dask scheduler at ``address`` who it is (its ``identity``) and hang up. An address
    where none answers within ``timeout_s`` (nothing listening, a wrong host or port, another
    service there, an unknown scheme) is a ``ConfigError`` naming it: distributed's own client
    gives a traceback after 30 s, or waits forever on a service that never replies. None:
    nothing to check (a LocalCluster will be started). Runs its own event loop in a thread, so
    it may be called from anywhere, a running loop's thread included."""
    if not address:
        return
    from concurrent.futures import ThreadPoolExecutor

    from ial.errors import ConfigError, first_line

    with ThreadPoolExecutor(1) as pool:
        try:
            reply = pool.submit(asyncio.run, _identity(address, timeout_s)).result()
            why = None if isinstance(reply, dict) and reply.get("type") == "Scheduler" else (
                f"something answered, but not a Dask scheduler: {str(reply)[:80]!r}")
        except (asyncio.TimeoutError, TimeoutError):
            why = f"no answer within {timeout_s:g} s"
        except MemoryError:  # a frame length read from another protocol's bytes
            why = "something answered, but not in Dask's protocol"
        except Exception as exc:  # noqa: BLE001 - whatever failed, that address is no scheduler
            why = first_line(exc)
    if why:
        raise ConfigError("dask_address", f"no Dask scheduler at {address!r} ({why}); start one "
                          "there (dask scheduler), fix the address, or leave dask_address unset "
                          "for a LocalCluster", "from --dask-address or the config")


async def _identity(address: str, timeout_s: float) -> object:
    """The scheduler's reply to ``{"op": "identity"}`` (a dict with ``type: Scheduler``)."""
    from distributed.comm import connect
    from distributed.security import Security

    async def ask() -> object:  # TLS settings from the dask config, as a Client takes them
        comm = await connect(address, timeout=timeout_s,
                             **Security().get_connection_args("client"))
        try:
            await comm.write({"op": "identity"})
            return await comm.read()
        finally:
            comm.abort()

    return await asyncio.wait_for(ask(), timeout_s)


def worker_name() -> str:
    """The Dask worker's address inside a Dask task (``tcp://10.77.0.11:40123``: tells the hosts of
    a cluster apart even when they share a hostname), else ``<hostname>:<pid>``."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def machine() -> dict:
    """The machine this process runs on, as a run records it (``result.json``, the export's
    lineage): training is deterministic on one machine, not across CPUs, so two runs of one
    config compare bit for bit only when this is the same. Keys: ``cpu`` (the model name from
    /proc/cpuinfo, else ``platform.processor()``), ``arch``, ``cpus`` (logical CPUs), ``gpu``
    (the first CUDA device's name, or None). Read once per process."""
    return dict(_machine())


@functools.cache
def _machine() -> dict:
    import torch

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu or "unknown", "arch": platform.machine(), "cpus": os.cpu_count(),
            "gpu": gpu}


def torch_device(name: str, field: str = "device") -> str:
    """The torch device a config names: ``auto`` is ``cuda`` when a CUDA device is visible, else
    ``cpu``; ``cuda``/``cuda:N`` where none is visible is a ``UserError`` naming ``field``."""
    import torch

    from ial.errors import UserError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"{field}: {name!r} asked for, but no CUDA device is visible here "
                        "(use auto or cpu)")
    return name


def quiet_dask_shutdown() -> None:
    """Keep a cluster's ordinary shutdown from printing a traceback.

    When a LocalCluster closes (at the end of every ingest and featurize run), its scheduler's
    batched streams to the workers that are going away log ``Batched Comm Closed`` at INFO level
    with the ``CommClosedError`` traceback (``distributed.batched``), which reads like a crash
    in the middle of a run's output. Only that logger is set to WARNING; its real failure,
    ``Error in batched write``, is logged at ERROR and still shows.

    A client of a remote scheduler that lost a worker (a link outage) may leave a comm's
    connect timeout in a future nobody awaits; asyncio reports it at exit (``Future exception
    was never retrieved ... TimeoutError``) after the run has succeeded. Only that report, for a
    timeout or a closed comm, is dropped; other asyncio errors still show.
    """
    logging.getLogger("distributed.batched").setLevel(logging.WARNING)
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, _UnretrievedCommTimeout) for f in asyncio_log.filters):
        asyncio_log.addFilter(_UnretrievedCommTimeout())


class _UnretrievedCommTimeout(logging.Filter):
    """Drops asyncio's report of a never-awaited future that ended in a timeout or closed comm."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not record.getMessage().startswith("Future exception was never "
                                                             "retrieved"):
            return True
        from distributed.comm.core import CommClosedError

        return not isinstance(exc, (TimeoutError, CommClosedError))
