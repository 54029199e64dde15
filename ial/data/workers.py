"""How the shard loader's worker processes start, and how they end when their trainer is gone.

Workers start from a forkserver that has imported the loader (and torch) once, so each worker
forks from a clean, single-threaded process (``worker_context``). The trainer has threads
(TensorBoard writer, Prefect's log shipper, gloo); forking it directly can leave a worker dead on
exit ("DataLoader worker exited unexpectedly").

The forkserver is the workers' parent, which blinds PyTorch's own check that a worker's parent is
alive (``ManagerWatchdog`` compares ``os.getppid()``), and every worker holds the pipe that keeps
the forkserver running. When the trainer is killed (SIGKILL, the OOM killer, a node going down
under a launcher), its workers and the forkserver would then live on for good, holding their
shared memory: seen as a forkserver and a worker still alive long after a killed test run.
``worker_init`` starts a thread in each worker that ends it once its trainer is gone.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time

import torch

# How often a worker checks that its trainer still runs (s).
OWNER_CHECK_INTERVAL = 1.0


def worker_context():
    """A forkserver context that has imported ``ial.data.loader`` (and torch) once."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["ial.data.loader"])
    return ctx


def worker_init_for_this_process():
    """The ``worker_init_fn`` for a DataLoader iterated by this process (its pid is the owner)."""
    return functools.partial(worker_init, owner=os.getpid())


def worker_init(worker_id: int, owner: int) -> None:
    """In each worker: one torch thread, the stop signals ignored, and a daemon thread that
    exits the worker when the ``owner`` process (the trainer iterating the loader) has ended.

    A stop (Ctrl-C, or the launcher's SIGTERM to the rank's process group) reaches the workers
    too. The trainer stops at the end of its step and saves; a worker that died of the signal
    first made the trainer's wait for its next batch fail ("DataLoader worker exited
    unexpectedly") instead. Workers end with the loader, or by the watchdog."""
    torch.set_num_threads(1)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    threading.Thread(target=exit_when_gone, args=(owner,), daemon=True,
                     name="loader-owner-watchdog").start()


def exit_when_gone(pid: int, interval: float = OWNER_CHECK_INTERVAL) -> None:
    """Poll every ``interval`` s; ``os._exit(0)`` once process ``pid`` has ended."""
    while process_alive(pid):
        time.sleep(interval)
    os._exit(0)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs: it exists and (where ``/proc`` tells) is not a zombie, i.e. killed
    but not yet reaped by its parent."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")
