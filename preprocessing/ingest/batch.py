"""Batches: fixed before any download (``plan_batches``), run one at a time (``run_batch``:
``concurrency`` clips in flight, index part + stats written at the end)."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from ial.runtime import worker_name
from ial.storage import Storage, write_text
from preprocessing.clip_index import write_clip_index_part
from preprocessing.ingest.clip import adopt_existing, now_utc, process_clip
from preprocessing.ingest.config import IngestConfig
from preprocessing.ingest.manifests import ManifestEntry
from preprocessing.ingest.rate_limit import RateLimiter


@dataclasses.dataclass(frozen=True)
class Batch:
    batch_id: str
    entries: tuple[ManifestEntry, ...]


def reason_code(reason: str | None) -> str:
    """The stable token of a stored reason (``"http_404: detail"`` → ``"http_404"``)."""
    return (reason or "").split(":", 1)[0].strip()


def batch_prefix(manifest: str) -> str:
    stem = os.path.splitext(os.path.basename(str(manifest).rstrip("/")))[0] or "manifest"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") or "manifest"


def plan_batches(entries: list[ManifestEntry], batch_size: int, prefix: str = "batch"
                 ) -> tuple[list[Batch], int]:
    """Fix the batches before any download: manifest order, duplicate clip ids dropped (first
    wins), ``batch_size`` clips each, ids ``<prefix>-00000``, ... Returns ``(batches,
    n_duplicates)``."""
    seen: set[str] = set()
    unique = []
    for e in entries:
        if e.clip_id in seen:
            continue
        seen.add(e.clip_id)
        unique.append(e)
    batches = [Batch(f"{prefix}-{i // batch_size:05d}", tuple(unique[i:i + batch_size]))
               for i in range(0, len(unique), batch_size)]
    return batches, len(entries) - len(unique)


def _read_batch_part(storage: Storage, dataset: str, batch_id: str) -> dict[str, dict]:
    from ial.parquet_reading import read_parquet
    from preprocessing.clip_index import clip_index_dir, validate_clip_index

    url = f"{clip_index_dir(storage, dataset)}/{batch_id}.parquet"
    if not storage.exists("clips", dataset, "index", f"{batch_id}.parquet"):
        return {}
    table = validate_clip_index(read_parquet(url), url)
    return {r["clip_id"]: r for r in table.to_pylist()}


def apply_manifest_fields(row: dict, entry: ManifestEntry) -> dict:
    """``row`` with the manifest's current label, labels and split (a new dict with a fresh
    ``updated_at`` when any of them changed; ``row`` itself when none did)."""
    fields = {"label": entry.label, "labels": list(entry.labels), "split": entry.split}
    if all(row.get(k) == v for k, v in fields.items()):
        return row
    return {**row, **fields, "updated_at": now_utc()}


def rewrite_rows(storage: Storage, dataset: str, batch_id: str, rows: dict[str, dict]) -> None:
    """Replace rows (by clip_id) in batch ``batch_id``'s index part, atomically."""
    part = _read_batch_part(storage, dataset, batch_id)
    write_clip_index_part(storage, dataset, batch_id, [rows.get(c, r) for c, r in part.items()])


def run_batch(cfg: IngestConfig, batch: Batch, previous: dict[str, dict] | None = None,
              rate_limit_per_minute: float | None = None,
              on_clip: Callable[[dict], None] | None = None,
              existing: set[str] | None = None) -> dict:
    """Ingest one batch; writes its index part and stats; returns the stats dict.

    ``previous``: earlier index rows by clip_id (default: this batch's existing part).
    ``existing``: clip ids of this batch with a clip file but no row (default: asked of the
    storage per clip); such files, left by a killed run, are validated and adopted.
    ``rate_limit_per_minute``: this batch's share of the global budget (default: all of it).
    ``on_clip(row)`` is called after each clip (progress bars).
    """
    storage = Storage(cfg.root)
    dataset = cfg.dataset_name
    started = time.time()
    if previous is None:
        previous = _read_batch_part(storage, dataset, batch.batch_id)
    limiter = RateLimiter(cfg.rate_limit_per_minute if rate_limit_per_minute is None
                          else rate_limit_per_minute)
    rows: dict[str, dict] = {}
    todo: list[tuple[ManifestEntry, int]] = []
    carried = adopted = relabeled = 0
    for entry in batch.entries:
        prev = previous.get(entry.clip_id)
        if prev is not None and (prev["status"] != "failed" or not cfg.retry_failed):
            row = apply_manifest_fields(prev, entry)
            relabeled += row is not prev
            row = dict(row)
            row["batch"] = batch.batch_id
            rows[entry.clip_id] = row
            carried += 1
            continue
        if prev is None:
            row = adopt_existing(cfg, storage, entry, batch.batch_id, existing)
            if row is not None:
                rows[entry.clip_id] = row
                adopted += 1
                continue
        todo.append((entry, int(prev["attempts"] or 0) if prev else 0))
    lock = threading.Lock()

    def work(item):
        entry, attempts = item
        row = process_clip(cfg, storage, entry, batch.batch_id, limiter.acquire, attempts)
        with lock:
            rows[entry.clip_id] = row
        if on_clip is not None:
            on_clip(row)
        return row

    if todo:
        with ThreadPoolExecutor(max_workers=cfg.concurrency,
                                thread_name_prefix=f"ingest-{batch.batch_id}") as pool:
            list(pool.map(work, todo))
    ordered = [rows[e.clip_id] for e in batch.entries]
    write_clip_index_part(storage, dataset, batch.batch_id, ordered)
    stats = batch_stats(batch.batch_id, dataset, ordered, [e.clip_id for e, _ in todo],
                        carried, adopted, time.time() - started, storage)
    stats["relabeled"] = relabeled
    write_text(storage.url("clips", dataset, "stats", f"{batch.batch_id}.json"),
               json.dumps(stats, indent=2, sort_keys=True))
    return stats


def batch_stats(batch_id: str, dataset: str, rows: list[dict], processed_ids: list[str],
                carried: int, adopted: int, seconds: float, storage: Storage) -> dict:
    """Counts by status and reason, bytes, seconds, clips/s (never any secret)."""
    processed = set(processed_ids)
    done_now = [r for r in rows if r["clip_id"] in processed]
    ok_now = [r for r in done_now if r["status"] == "ok"]
    nbytes = 0
    for r in ok_now:
        try:
            from ial.storage import filesystem

            fs, path = filesystem(r["path"])
            nbytes += int(fs.size(path))
        except Exception:
            pass
    return {
        "batch": batch_id,
        "dataset": dataset,
        "clips": len(rows),
        "processed": len(done_now),
        "carried_over": carried,
        "adopted": adopted,
        "by_status": dict(Counter(r["status"] for r in rows)),
        "by_reason": dict(Counter(f"{r['status']}:{reason_code(r['reason'])}"
                                  for r in rows if r["status"] != "ok")),
        "processed_by_status": dict(Counter(r["status"] for r in done_now)),
        "silent": sum(1 for r in rows if r.get("silent")),
        "attempts": sum(int(r.get("attempts") or 0) for r in done_now),
        "bytes": nbytes,
        "clip_seconds": round(sum(float(r["duration"] or 0) for r in ok_now), 3),
        "seconds": round(seconds, 3),
        "clips_per_s": round(len(ok_now) / seconds, 4) if seconds > 0 else None,
        "finished_at": now_utc().isoformat(),
        "worker": worker_name(),
    }
