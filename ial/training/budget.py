"""How far a run is through its budget, and the separator's learning-rate decay over it.

A run ends at ``TrainConfig.steps`` or after ``max_minutes``, whichever comes first, so its
progress is the larger of the two fractions. ``TrainConfig.lr_decay`` names a multiplier of that
progress (``LR_DECAYS``) that ``scale_learning_rates`` applies on top of whatever the DeepSpeed
scheduler set (its warm-up, say): with a wall-time budget the number of steps is not known in
advance, so a step-indexed DeepSpeed schedule (WarmupDecayLR, WarmupCosineLR) cannot end with it.

- ``progress(step, steps, elapsed_s, budget_s)``: fraction of the budget used, 0 … ≥1;
- ``LR_DECAYS``: name → ``factor(progress)``;
- ``scale_learning_rates(optimizer, factor)``: each group's lr = its scheduled lr × factor;
- ``StopSignals``: SIGINT (Ctrl-C), SIGTERM (a scheduler's or a cluster's stop) and SIGHUP (a
  hang-up) end the run at the next step boundary instead of killing it: the trainer saves a
  checkpoint there and stops;
- ``HangUpOnClosedOutput``: a rank's stdout/stderr that raises SIGHUP in its process when its
  reader has gone (a remote rank's ssh connection closed), instead of a ``BrokenPipeError``.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Callable

from ial.errors import UserError

if TYPE_CHECKING:
    import subprocess

    import torch


def progress(step: int, steps: int, elapsed_s: float, budget_s: float) -> float:
    """Fraction of the run's budget used: max(step / steps, elapsed_s / budget_s) (a budget_s of
    inf: steps only). ≥ 1 means the run is over."""
    return max(step / steps, elapsed_s / budget_s if math.isfinite(budget_s) else 0.0)


def constant(progress: float) -> float:
    """No decay: the scheduled lr as it is."""
    return 1.0


def cosine(progress: float) -> float:
    """Half a cosine from 1 at the start to 0 at the end of the budget."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


LR_DECAYS: dict[str, Callable[[float], float]] = {"constant": constant, "cosine": cosine}

_SCHEDULED = "scheduled_lr"   # the lr the scheduler (or the config) set, before our factor
_APPLIED = "decayed_lr"       # the lr we set, to notice when the scheduler has set a new one


def scale_learning_rates(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set each parameter group's lr to its scheduled lr × ``factor``.

    The scheduled lr is the group's lr unless it is still the one this function set last time
    (no scheduler, or the scheduler did not step since: a batch without a separator update),
    in which case the one remembered then. Both are kept in the group (saved with the optimizer's
    state, so a resumed run continues the same way).
    """
    for group in optimizer.param_groups:
        if group.get(_APPLIED) != group["lr"]:
            group[_SCHEDULED] = group["lr"]
        group["lr"] = group[_SCHEDULED] * factor
        group[_APPLIED] = group["lr"]


class TrainingStopped(UserError):
    """A stop signal (``StopSignals``) ended the run at a step boundary, after saving a
    checkpoint there: one line saying so and how to resume."""

    @classmethod
    def at(cls, run_name: str, by: str, step: int, steps: int, url: str) -> TrainingStopped:
        """Stopped by signal ``by`` (e.g. ``"SIGTERM"``) at ``step`` of ``steps``; the run's
        checkpoints are in ``url``."""
        if step == 0:
            return cls(f"training {run_name!r} stopped by {by} before its first step, with "
                       "nothing to save: run the same command again to start it")
        return cls(f"training {run_name!r} stopped by {by} at step {step} of {steps}, saved "
                   f"there in {url}: run the same command again to resume")


def agreed_progress(used: float, stop_signal: str | None,
                    device: torch.device | str = "cpu") -> tuple[float, str | None]:
    """``(progress, stop)`` that every rank agrees on, from this rank's ``used`` (``progress``)
    and the stop signal it had (a name, or None): rank 0's clock decides the progress (the same
    lr and the same last step everywhere), and a stop signal on any rank stops all of them at
    this step (progress 1, ``stop`` = the signal's name). One process: no collective.
    ``device``: the engines' (NCCL reduces CUDA tensors only)."""
    import torch
    import torch.distributed as dist

    asked = signal.Signals[stop_signal].value if stop_signal else 0
    if dist.is_initialized() and dist.get_world_size() > 1:
        shared = torch.tensor([used if dist.get_rank() == 0 else 0.0, asked],
                              dtype=torch.float64, device=device)
        dist.all_reduce(shared, op=dist.ReduceOp.MAX)
        used, asked = shared.tolist()
    if asked:
        return 1.0, signal.Signals(int(asked)).name
    return used, None


class StopSignals:
    """While active, SIGINT, SIGTERM and SIGHUP only record that a stop was asked for
    (``signal``: the first one's name, e.g. ``"SIGTERM"``; ``None`` until then); the previous
    handlers come back on exit. Later signals change nothing (the run is already stopping;
    ``kill -9`` still kills).
    With ``forward_to`` (a child started with ``start_new_session=True``: the training a
    launcher waits for), each signal goes to the child's whole process group instead, since a
    scheduler's SIGTERM reaches only the launcher, and the ``deepspeed`` runner in between has
    no handler of its own (its ``launch.py`` and every rank do); ``wait_for_group`` then waits
    until the group's last checkpoint is written.

    Signal handlers exist only in the main thread: elsewhere (a Prefect task's worker thread)
    this does nothing and the process's own handling stays as it was. A signal the process
    ignores (SIGINT in a shell's background job) stays ignored.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, forward_to: subprocess.Popen | None = None) -> None:
        self.signal: str | None = None
        self.forward_to = forward_to
        self._previous: dict[int, object] = {}

    @staticmethod
    def available() -> bool:
        """Whether handlers can be installed here (the main thread only): a launcher starts its
        child in a group of its own only then, else the child stays in the launcher's group
        and gets what the group gets (a terminal's Ctrl-C), as it would without this."""
        return threading.current_thread() is threading.main_thread()

    def __enter__(self) -> StopSignals:
        if self.available():
            for signum in self.SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:  # e.g. a background job's
                    self._previous[signum] = signal.signal(signum, self._handle)  # SIGINT
            if self.forward_to is None and signal.SIGHUP in self._previous and any(
                    getattr(stream, "closed_at", None) for stream in (sys.stdout, sys.stderr)):
                self.signal = "SIGHUP"  # the output closed before: a hang-up already
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.forward_to is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.forward_to.pid, signum)
        elif self.signal is None:
            print(f"\n{signal.Signals(signum).name}: stopping after this step and saving a "
                  "checkpoint there", file=sys.stderr, flush=True)
        self.signal = self.signal or signal.Signals(signum).name

    def wait_for_group(self, timeout_s: float = 120.0) -> None:
        """After a forwarded signal, wait (at most ``timeout_s``) until every process of the
        child's group has ended: the ranks still write their checkpoint after the runner
        that leads the group has gone."""
        if not self.signal or self.forward_to is None:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.killpg(self.forward_to.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


class HangUpOnClosedOutput:
    """A text stream (a rank's ``sys.stdout`` or ``sys.stderr``) whose first failed write or
    flush (EPIPE: nobody reads it any more) raises SIGHUP in this process while a Python handler
    takes it (``StopSignals``, which also notices an output that closed before it started);
    never SIGHUP's default, which would kill the rank as it saves. That write and every later
    one are dropped.

    A rank that DeepSpeed's pdsh launcher started over ssh writes into that ssh connection. When
    the launcher on the head stops (Ctrl-C, SIGTERM), the connection closes a moment before the
    launcher's own stop signal reaches the node, and the rank's next print would end it with a
    ``BrokenPipeError``, its last steps unsaved. With this, it stops at the next step and saves
    (``StopSignals`` handles SIGHUP); a rank whose launcher vanished without a stop does the same
    at its next write (its progress bar, a warning) rather than train on unheard. Under
    ``nohup`` (SIGHUP ignored) it keeps training, its output dropped.
    """

    def __init__(self, stream) -> None:
        self._stream = stream
        self.closed_at: float | None = None

    def _guard(self, call, *args):
        if self.closed_at is not None:
            return None
        try:
            return call(*args)
        except OSError:  # BrokenPipeError, or EIO from a vanished terminal
            self.closed_at = time.monotonic()
            if callable(signal.getsignal(signal.SIGHUP)):
                os.kill(os.getpid(), signal.SIGHUP)
            return None

    def write(self, text: str) -> int:
        self._guard(self._stream.write, text)
        return len(text)

    def flush(self) -> None:
        self._guard(self._stream.flush)

    def __getattr__(self, name: str):  # isatty, fileno, encoding, ... of the stream itself
        return getattr(self._stream, name)
