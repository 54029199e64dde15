"""Where the current code runs, as stats and logs name it."""

from __future__ import annotations

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
