"""Partial results of an evaluation, so that a killed ``ial evaluate`` resumes where it stopped.

While it runs, ``evaluate`` hands each scored batch of mixtures to ``PartialResults.add``; about
once a minute the batches not yet saved are written as one file ``<out>/.partial/<key>/
part-<first batch start>.json`` (atomically: a file is whole or absent). A re-run with the same
``key`` loads them and scores only the batches that are missing; the finished report has the same
scores as an uninterrupted run's (``counts.resumed`` says how many were reused), and the
``.partial`` folder is removed once ``results.json`` is written.

``key`` is a digest of everything that decides the scores: the checkpoint's bytes (sha256), the
data URL, the protocol (split, mix, n, seed, max_mixtures), the oracles, the window, the silence
and clamp levels, the batch size and the device. Another checkpoint or setting never reuses
them; its files are kept apart under another key and removed with the folder at the end.
"""

from __future__ import annotations

import hashlib
import json
import time

from ial.storage import join, listdir, read_text, remove, write_text

PARTIAL_DIR = ".partial"
FLUSH_SECONDS = 60.0  # s between two saves: what a killed run loses at most, besides its batch


def partial_key(cfg, checkpoint_sha256: str | None, window: int) -> str:
    """16 hex digits naming the scores of ``cfg`` (an ``EvalConfig``) on that checkpoint."""
    fields = {name: getattr(cfg, name) for name in (
        "data", "split", "mix", "n_per_combination", "seed", "max_mixtures", "oracles",
        "window_hop", "window_taper", "silent_db", "clamp_db", "batch_size")}
    fields.update(checkpoint=checkpoint_sha256 or cfg.checkpoint, window=window,
                  device=str(cfg.device))
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


class PartialResults:
    """The saved batches of one evaluation (``out`` report URL, ``key`` from ``partial_key``).

    ``batches``: ``{start index: {"records": [...], "skipped": [...]}}`` loaded from earlier
    runs; ``resume=False`` ignores them (they are overwritten as the run goes)."""

    def __init__(self, out: str, key: str, resume: bool = True,
                 flush_seconds: float | None = None):
        self.root = join(out, PARTIAL_DIR)
        self.dir = join(self.root, key)
        self.flush_seconds = FLUSH_SECONDS if flush_seconds is None else flush_seconds
        self.batches: dict[int, dict] = self._load() if resume else {}
        self._pending: dict[int, dict] = {}
        self._last_flush = time.monotonic()

    def _load(self) -> dict[int, dict]:
        batches: dict[int, dict] = {}
        for url in listdir(self.dir):
            if not url.rsplit("/", 1)[-1].startswith("part-"):
                continue
            try:
                saved = json.loads(read_text(url))
                batches.update({int(k): v for k, v in saved["batches"].items()})
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # unreadable: those batches are scored again
        return batches

    def add(self, start: int, records: list[dict], skipped: list[dict]) -> None:
        """Keep a scored batch (its first mixture is ``start``); saves every ``flush_seconds``."""
        self._pending[start] = {"records": records, "skipped": skipped}
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            first = min(self._pending)
            write_text(join(self.dir, f"part-{first:09d}.json"),
                       json.dumps({"batches": self._pending}))
            self.batches.update(self._pending)
            self._pending = {}
        self._last_flush = time.monotonic()

    def remove_all(self) -> None:
        """Remove ``<out>/.partial`` (every key's files): the report is complete."""
        remove(self.root, recursive=True)
