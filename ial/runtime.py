"""Where the current code runs, as stats and logs name it, and what its Dask cluster logs."""

from __future__ import annotations

import logging
import os
import socket


def worker_name() -> str:
    """The Dask worker's address inside a Dask task (``tcp://10.77.0.11:40123``: tells the hosts of
    a cluster apart even when they share a hostname), else ``<hostname>:<pid>``."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


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
