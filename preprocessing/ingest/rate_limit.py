"""A thread-safe request rate limiter (requests per minute), shared by the download threads.

Requests are spaced evenly: each ``acquire()`` reserves the next free slot (``60 / per_minute``
seconds after the previous one) and sleeps until it. Across Dask workers the ingest splits the
global budget between the batches that can run at once (``share``), so the sum over all workers
never exceeds the configured rate.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class RateLimiter:
    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if per_minute < 0:
            raise ValueError(f"per_minute must be >= 0 (0 = unlimited), got {per_minute}")
        self.per_minute = per_minute
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = 0.0

    def acquire(self) -> float:
        """Block until this request may go; returns the seconds waited."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return wait


def share(per_minute: float, parallel: int) -> float:
    """One worker's part of a global ``per_minute`` budget split over ``parallel`` workers."""
    if not per_minute:
        return 0.0
    return per_minute / max(1, parallel)
