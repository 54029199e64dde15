"""Ingest: manifest → exact sections (yt-dlp) → clips (ffmpeg) → clip index + per-batch stats.

Plain library (no Prefect); ``flows/ingest.py`` wraps it and ``ial ingest`` runs it::

    cfg = load_config(IngestConfig, "configs/ingest/demo.yaml", ["root=./data"])
    summary = ingest(cfg)                    # in-process; or ingest(cfg, client=dask_client)

Steps:

1. ``read_manifest`` (registry by format) → entries; malformed rows raise (file:line) or, with
   ``skip_malformed``, are counted with their line numbers.
2. ``plan_batches``: stable clip ids ``{video_id}_{start_ms}``, duplicates dropped, batches
   fixed (manifest order, ``<manifest stem>-<NNNNN>``) before any download.
3. ``run_batch`` per batch (``concurrency`` clips at a time, a shared rate limiter): each clip is
   downloaded as an exact section (``download.download_with_retries``), sliced
   (``slicing.slice_clip``) in a local temporary folder, validated, and uploaded atomically to
   ``<root>/clips/<dataset>/<clip_id>.mp4``. Every outcome is a row (status ok | unavailable |
   failed | invalid, with its reason). At the end of the batch its index part
   (``index/<batch_id>.parquet``) and its stats (``stats/<batch_id>.json``) are written
   atomically.

Resume: a re-run carries forward every row already final (ok, unavailable, invalid) and, with
``retry_failed``, retries only the ``failed`` ones; a clip file left by a killed run (no index row
yet) is validated and adopted instead of downloaded again. A batch part replaces the earlier
version of the same batch, so no clip ever gets two rows, and no half clip is ever visible
(files appear by atomic rename / single PUT). A clip already in the index under another
manifest's batches (the same clips ingested from a copy of the manifest under another name) keeps
its one row there; a changed label/split in the new manifest is applied to that row and counted.

One ingest of a dataset runs at a time: ``ingest`` (and the ingest flow) hold
``clips/<dataset>/ingest.lock`` (``ingest_lock``); a second one is a ``UserError`` naming the
holder, before it downloads anything.

A manifest with no entries, or a run where no clip of the manifest is ``ok``, is a
``NothingIngested`` error (its message has the counts by status and reason); a run with some
failures succeeds, with the counts in its summary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter

from ial.config import ConfigError, save_config
from ial.errors import UserError
from ial.runtime import check_scheduler, connect_scheduler
from ial.storage import Storage, sweep_orphan_temps, write_text
from ial.storage.locks import StorageLock
from preprocessing.clip_index import STATUSES, read_clip_index
from preprocessing.ingest.batch import (Batch, apply_manifest_fields, batch_prefix, plan_batches,
                                        reason_code, rewrite_rows, run_batch)
from preprocessing.ingest.clip import existing_clip_ids
from preprocessing.ingest.config import IngestConfig, redacted_config
from preprocessing.ingest.manifests import Manifest, ManifestError, read_manifest
from preprocessing.ingest.outcomes import redact
from preprocessing.ingest.rate_limit import share


@dataclasses.dataclass
class IngestPlan:
    cfg: IngestConfig
    batches: list[Batch]
    previous: dict[str, dict[str, dict]]  # batch_id → clip_id → earlier row
    existing: dict[str, set[str]]  # batch_id → clip ids with a file but no row (killed runs)
    entries: int
    duplicates: int
    skipped: list[tuple]  # malformed manifest rows: (line, reason)
    # rows of entries already indexed under another manifest's batches (not ingested again)
    elsewhere: list[dict] = dataclasses.field(default_factory=list)
    relabeled_elsewhere: int = 0  # of those, rows whose label/split the manifest changed
    unknown_labels: dict[str, int] = dataclasses.field(default_factory=dict)


class NothingIngested(UserError):
    """No clip of the manifest could be ingested (or the manifest has no entries)."""

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary


STALE_TEMP_SECONDS = 3600.0


def sweep_stale_temps(storage: Storage, dataset: str, max_age: float = STALE_TEMP_SECONDS) -> int:
    """Delete hidden temporary clip files (``.<clip>.mp4.tmp-*``) older than ``max_age`` s that a
    killed run left behind on a local root (object stores never show partial uploads). Younger
    ones may belong to a running writer and are kept. Returns how many were removed."""
    if storage.remote:
        return 0
    folder = storage.url("clips", dataset)
    if not os.path.isdir(folder):
        return 0
    removed = 0
    now = time.time()
    for name in os.listdir(folder):
        if name.startswith(".") and ".tmp-" in name:
            path = os.path.join(folder, name)
            try:
                if now - os.path.getmtime(path) > max_age:
                    os.unlink(path)
                    removed += 1
            except FileNotFoundError:
                pass
    return removed


def check_inputs(cfg: IngestConfig) -> tuple[Storage, Manifest]:
    """Check the storage root and read the manifest; writes nothing. Raises the UserError a run
    would stop on (no manifest, a missing bucket, a malformed row, nothing to ingest), so
    ``ial ingest`` can say it in one line before it starts a Prefect flow."""
    if not cfg.manifest:
        raise ConfigError("manifest", "no manifest given")
    storage = Storage(cfg.root).check(what="storage root")
    opts = dict(cfg.manifest_options)
    opts.setdefault("clip_seconds", cfg.clip_seconds)
    manifest = read_manifest(cfg.manifest, cfg.manifest_format,
                             skip_malformed=cfg.skip_malformed, **opts)
    if not manifest:
        why = (f"all {len(manifest.skipped)} rows are malformed (skipped)" if manifest.skipped
               else "it has no entries")
        raise ManifestError(cfg.manifest, None, f"nothing to ingest: {why}")
    check_scheduler(cfg.dask_address)
    return storage, manifest


def prepare(cfg: IngestConfig, inputs: tuple[Storage, Manifest]) -> IngestPlan:
    """Fix the batches of the checked ``inputs`` (what ``check_inputs`` returned), save the
    (redacted) config, load earlier rows, and sweep temporaries of killed runs (local clip temp
    files, and the system temp dir's ``ial-*`` folders of processes that are gone)."""
    storage, manifest = inputs
    prefix = batch_prefix(cfg.manifest)
    dataset = cfg.dataset_name
    index = read_clip_index(storage, dataset)
    by_clip = {r["clip_id"]: r for r in index.to_pylist()}
    # Clips already indexed by another manifest's batches keep their one row there.
    ours, elsewhere, relabel = [], [], {}
    for entry in manifest:
        row = by_clip.get(entry.clip_id)
        if row is None or str(row["batch"]).startswith(prefix + "-"):
            ours.append(entry)
            continue
        new = apply_manifest_fields(row, entry)
        if new is not row:
            relabel.setdefault(row["batch"], {})[entry.clip_id] = new
            row = new
        if row["clip_id"] not in {r["clip_id"] for r in elsewhere}:
            elsewhere.append(row)
    for batch_id, rows in relabel.items():
        rewrite_rows(storage, dataset, batch_id, rows)
    batches, duplicates = plan_batches(ours, cfg.batch_size, prefix)
    duplicates += len(manifest) - len(ours) - len(elsewhere)
    sweep_stale_temps(storage, dataset)
    sweep_orphan_temps()
    save_config(redacted_config(cfg), storage.url("clips", dataset, "ingest_config.yaml"))
    write_text(storage.url("clips", dataset, "stats", f"{prefix}.manifest.json"), json.dumps({
        "manifest": redact(cfg.manifest), "format": cfg.manifest_format,
        "entries": len(manifest), "duplicates": duplicates, "batches": len(batches),
        "indexed_by_other_manifests": len(elsewhere),
        "relabeled_in_other_manifests": sum(len(r) for r in relabel.values()),
        "unknown_labels": manifest.unknown_labels,
        "skipped_malformed": [{"line": line, "reason": reason}
                              for line, reason in manifest.skipped],
    }, indent=2))
    previous = {b.batch_id: {e.clip_id: by_clip[e.clip_id] for e in b.entries
                             if e.clip_id in by_clip} for b in batches}
    files = existing_clip_ids(storage, dataset) - set(by_clip)
    existing = {b.batch_id: {e.clip_id for e in b.entries if e.clip_id in files} for b in batches}
    return IngestPlan(cfg, batches, previous, existing, len(manifest), duplicates,
                      list(manifest.skipped), elsewhere, sum(len(r) for r in relabel.values()),
                      dict(manifest.unknown_labels))


def summarize(plan: IngestPlan, stats: list[dict], seconds: float) -> dict:
    by_status: Counter = Counter(r["status"] for r in plan.elsewhere)
    by_reason: Counter = Counter(f"{r['status']}:{reason_code(r['reason'])}"
                                 for r in plan.elsewhere if r["status"] != "ok")
    processed_ok = 0
    for s in stats:
        by_status.update(s["by_status"])
        by_reason.update(s["by_reason"])
        processed_ok += s["processed_by_status"].get("ok", 0)
    return {
        "dataset": plan.cfg.dataset_name,
        # flat counts (latest status of every clip of this manifest)
        **{status: by_status.get(status, 0) for status in STATUSES},
        "new": sum(s["processed"] for s in stats),  # clips attempted by this run
        # already done (carried over, adopted, or indexed by another manifest's batches)
        "skipped": sum(s["carried_over"] + s["adopted"] for s in stats) + len(plan.elsewhere),
        "indexed_by_other_manifests": len(plan.elsewhere),
        "relabeled": sum(s.get("relabeled", 0) for s in stats) + plan.relabeled_elsewhere,
        "unknown_labels": plan.unknown_labels,
        "root": redact(plan.cfg.root),
        "manifest": redact(plan.cfg.manifest),
        "entries": plan.entries,
        "clips": sum(s["clips"] for s in stats) + len(plan.elsewhere),
        "duplicates": plan.duplicates,
        "skipped_malformed": [{"line": line, "reason": reason} for line, reason in plan.skipped],
        "batches": len(plan.batches),
        "processed": sum(s["processed"] for s in stats),
        "by_status": dict(by_status),
        "by_reason": dict(by_reason),
        "bytes": sum(s["bytes"] for s in stats),
        "seconds": round(seconds, 3),
        "clips_per_s": round(processed_ok / seconds, 4) if seconds > 0 else None,
    }


def ingest_lock(root: str, dataset: str) -> StorageLock:
    """One ingest of ``dataset`` under ``root`` at a time: ``clips/<dataset>/ingest.lock``. A
    second one (a command started again in another terminal, a deployment run beside a
    days-long backfill) would download every clip the first has not reached yet again. (The
    nightly checks it and leaves ingest out while one runs.)"""
    url = Storage(root).url("clips", dataset, "ingest.lock")
    return StorageLock(url, f"dataset {dataset!r} is being ingested",
                       "wait for it to end or stop it (run again, an ingest resumes where it "
                       "ended)")


def ingest(cfg: IngestConfig, progress: bool = True, client=None) -> dict:
    """Run the whole ingest of ``cfg.manifest``, holding ``ingest_lock``; returns a summary dict.

    Batches run one after another in this process (each with ``cfg.concurrency`` clips in
    flight), or as tasks on ``client`` (a ``dask.distributed.Client``; ``cfg.dask_address``
    connects one). The global rate limit is split over the batches that can run at once.
    """
    inputs = check_inputs(cfg)  # a root that cannot hold the lock is said as a root
    with ingest_lock(cfg.root, cfg.dataset_name):
        return _ingest(cfg, progress, client, inputs)


def _ingest(cfg: IngestConfig, progress: bool, client, inputs) -> dict:
    from tqdm.auto import tqdm

    started = time.time()
    plan = prepare(cfg, inputs)
    n_clips = sum(len(b.entries) for b in plan.batches)
    bar = tqdm(total=n_clips, desc=f"ingest {cfg.dataset_name}", unit="clip", disable=not progress)
    own_client = None
    if client is None and cfg.dask_address:
        client = own_client = connect_scheduler(cfg.dask_address)
    stats: list[dict] = []
    try:
        if client is None:
            for b in plan.batches:
                s = run_batch(cfg, b, plan.previous[b.batch_id], None,
                              on_clip=lambda row: bar.update(1),
                              existing=plan.existing[b.batch_id])
                bar.update(s["clips"] - s["processed"])
                stats.append(s)
        else:
            from distributed import as_completed

            parallel = max(1, min(len(plan.batches), sum(client.nthreads().values())))
            rate = share(cfg.rate_limit_per_minute, parallel)
            futures = [client.submit(run_batch, cfg, b, plan.previous[b.batch_id], rate, None,
                                     plan.existing[b.batch_id], pure=False,
                                     key=f"ingest-{cfg.dataset_name}-{b.batch_id}-{time.time_ns()}")
                       for b in plan.batches]
            for fut in as_completed(futures):
                s = fut.result()
                stats.append(s)
                bar.update(s["clips"])
    finally:
        bar.close()
        if own_client is not None:
            own_client.close()
    stats.sort(key=lambda s: s["batch"])
    return check_outcome(summarize(plan, stats, time.time() - started))


def check_outcome(summary: dict) -> dict:
    """``summary`` unchanged when at least one clip of the manifest is ``ok``; else a
    ``NothingIngested`` error whose message gives the counts by status and reason."""
    if summary.get("ok", 0) > 0:
        return summary
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary.get("by_reason", {}).items()))
    raise NothingIngested(
        f"none of the {summary.get('clips', 0)} clips of {summary.get('manifest')} could be "
        f"ingested into {summary.get('root')} ({reasons or 'no outcome recorded'}); per-batch "
        f"stats under clips/{summary.get('dataset')}/stats/", summary)
