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
(files appear by atomic rename / single PUT).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from ial.config import ConfigError, from_dict, save_config, to_dict
from ial.storage import Storage, local_copy, sha256, upload_file, write_text
from preprocessing.clip_index import STATUSES, read_clip_index, write_clip_index_part
from preprocessing.download import (DEFAULT_FORMAT, DEFAULT_FORMAT_SORT, YOUTUBE_URL_TEMPLATE,
                                    DownloadProblem, download_with_retries, redact)
from preprocessing.manifests import MANIFEST_READERS, ManifestEntry, read_manifest
from preprocessing.rate_limit import RateLimiter, share
from preprocessing.slicing import (MIN_AUDIO_RATE, SliceInvalid, check_source, clip_encode_args,
                                   finalize_section, slice_clip)

__all__ = ["IngestConfig", "Batch", "ingest", "plan_batches", "run_batch", "read_clip_index",
           "reason_code", "redacted_config"]


@dataclasses.dataclass
class IngestConfig:
    """Configuration of the ingest stage (``configs/ingest/*.yaml``)."""

    manifest: str = ""  # path/URL of the manifest file
    manifest_format: str = "vggsound"  # vggsound | audioset | music | generic
    manifest_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # reader options
    dataset: str | None = None  # default: the manifest format's name
    root: str = "./data"  # storage root (local dir or s3://bucket/prefix)
    url_template: str = YOUTUBE_URL_TEMPLATE  # where {video_id} is fetched from
    clip_seconds: float = 10.0  # s per clip (VGGSound/MUSIC; AudioSet: capped at this)
    fps: float = 8.0  # frames per second of the clips
    min_height: int = 224  # px: lowest format with >= this height; clips scaled so short side = this
    audio_rate: int = 22050  # Hz of the clips' audio (>= 11025)
    silence_db: float = -50.0  # dBFS: a clip whose peak is below this is flagged silent
    format: str = DEFAULT_FORMAT  # yt-dlp format selector ({min_height} filled in)
    format_sort: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_FORMAT_SORT))
    batch_size: int = 64  # clips per batch (one index part + one stats file each)
    concurrency: int = 2  # clips in flight per batch
    retries: int = 3  # retries of retryable failures (429, 5xx, connection, timeout)
    backoff: float = 2.0  # s: first retry delay (doubles, jittered; Retry-After wins)
    backoff_max: float = 60.0  # s
    rate_limit_per_minute: float = 0.0  # global download attempts per minute (0 = unlimited)
    socket_timeout: float = 30.0  # s
    skip_malformed: bool = False  # skip (and count) malformed manifest rows instead of failing
    retry_failed: bool = False  # retry clips recorded as failed (retryable) by earlier runs
    ytdlp_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # passed to yt-dlp
    dask_address: str | None = None  # Dask scheduler (None: LocalCluster in the flow)
    dask_workers: int = 1  # LocalCluster workers (flow)
    dask_threads: int = 2  # threads per LocalCluster worker = batches at once per worker
    video_preset: str = "veryfast"  # libx264 preset of the clips
    video_crf: int = 23

    def validate(self) -> None:
        if self.manifest_format not in MANIFEST_READERS:
            raise ConfigError("manifest_format", f"unknown format {self.manifest_format!r}; "
                              f"known: {', '.join(MANIFEST_READERS.names())}")
        if self.audio_rate < MIN_AUDIO_RATE:
            raise ConfigError("audio_rate", f"must be >= {MIN_AUDIO_RATE} Hz")
        for name in ("clip_seconds", "fps"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be > 0")
        for name in ("batch_size", "concurrency", "dask_workers", "dask_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be >= 1")
        for name in ("retries", "min_height"):
            if getattr(self, name) < 0:
                raise ConfigError(name, "must be >= 0")
        if self.rate_limit_per_minute < 0:
            raise ConfigError("rate_limit_per_minute", "must be >= 0 (0 = unlimited)")
        if "{video_id}" not in self.url_template:
            raise ConfigError("url_template", "must contain {video_id}")
        if self.dataset is not None and not re.match(r"^[A-Za-z0-9_.-]+$", self.dataset):
            raise ConfigError("dataset", f"use letters, digits, '_', '-', '.': {self.dataset!r}")

    @property
    def dataset_name(self) -> str:
        return self.dataset or self.manifest_format


@dataclasses.dataclass(frozen=True)
class Batch:
    batch_id: str
    entries: tuple[ManifestEntry, ...]


# ------------------------------------------------------------------------------ secrets

_SECRET_KEY = re.compile(r"pass|user|token|secret|key|auth|header|cookie(?!file)", re.I)


def _redact_value(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redact_value(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(key, v) for v in value]
    if _SECRET_KEY.search(str(key)) and value not in (None, "", False):
        return "***"
    if isinstance(value, str):
        return redact(value)
    return value


def redacted_config(cfg: IngestConfig) -> IngestConfig:
    """A copy of ``cfg`` safe to save/log: passwords, usernames, headers, tokens → ``***``,
    credentials inside URLs (proxy, template) removed. A cookie file's path is kept, never its
    content."""
    data = to_dict(cfg)
    data["ytdlp_options"] = _redact_value("ytdlp_options", data.get("ytdlp_options") or {})
    data["url_template"] = redact(data["url_template"])
    data["manifest"] = redact(data["manifest"])
    data["root"] = redact(data["root"])
    return from_dict(IngestConfig, data)


# ------------------------------------------------------------------------------ planning

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


# ------------------------------------------------------------------------------ one clip

def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _source_url(cfg: IngestConfig, entry: ManifestEntry) -> str:
    if entry.url:
        return entry.url
    return cfg.url_template.format(video_id=entry.video_id)


def _is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def _base_row(cfg: IngestConfig, entry: ManifestEntry, batch_id: str) -> dict:
    return {
        "clip_id": entry.clip_id, "video_id": entry.video_id, "dataset": cfg.dataset_name,
        "label": entry.label, "labels": list(entry.labels), "split": entry.split,
        "url": redact(_source_url(cfg, entry)), "start": float(entry.start),
        "end": float(entry.end), "status": "failed", "reason": "", "path": None,
        "duration": None, "sha256": None, "silent": None, "attempts": 0, "batch": batch_id,
        "updated_at": _now(),
    }


def _source_duration(url: str) -> float | None:
    """Duration (s) from the media's header (a direct media URL or file), None if unknown."""
    try:
        return _probe(url).get("duration")
    except Exception:
        return None


def _probe(url: str) -> dict:
    from ial.media import probe_media

    return probe_media(url)


def _refine_section_problem(exc: SliceInvalid, url: str, entry: ManifestEntry,
                            total: float | None = None) -> SliceInvalid:
    """A downloaded section is too short or empty: past the end of the video, or truncated?
    ``total``: the video's duration (s) if the site gave it, else read from the media header."""
    if exc.reason not in ("section_past_end", "short_source", "truncated_source",
                          "unreadable_source"):
        return exc
    if total is None:
        total = _source_duration(url)
    if total is not None and entry.end > total + 0.25:
        return SliceInvalid("section_past_end",
                            f"the video is {total:.2f} s; the section ends at {entry.end:.2f} s")
    if exc.reason == "unreadable_source":
        return exc
    return SliceInvalid("truncated_source", exc.detail)


def process_clip(cfg: IngestConfig, storage: Storage, entry: ManifestEntry, batch_id: str,
                 acquire: Callable[[], float] | None = None, previous_attempts: int = 0) -> dict:
    """Download + slice + validate + upload one clip; returns its clip index row."""
    row = _base_row(cfg, entry, batch_id)
    row["attempts"] = previous_attempts
    url = _source_url(cfg, entry)
    duration = float(entry.end - entry.start)
    target = storage.url("clips", cfg.dataset_name, f"{entry.clip_id}.mp4")
    tmp = tempfile.mkdtemp(prefix="ial-ingest-")
    clip_path = os.path.join(tmp, "clip.mp4")
    slice_kw = dict(duration=duration, fps=cfg.fps, min_side=cfg.min_height,
                    audio_rate=cfg.audio_rate, silence_db=cfg.silence_db,
                    preset=cfg.video_preset, crf=cfg.video_crf)
    try:
        if _is_http(url):
            try:
                got = download_with_retries(
                    url, entry.start, entry.end, tmp, "section", retries=cfg.retries,
                    backoff=cfg.backoff, backoff_max=cfg.backoff_max, acquire=acquire,
                    min_height=cfg.min_height, format=cfg.format,
                    format_sort=tuple(cfg.format_sort), socket_timeout=cfg.socket_timeout,
                    options=cfg.ytdlp_options,
                    output_args=clip_encode_args(cfg.fps, cfg.min_height, cfg.audio_rate,
                                                 cfg.video_preset, cfg.video_crf))
            except DownloadProblem as exc:
                row["attempts"] = previous_attempts + getattr(exc, "attempts", 1)
                row["status"], row["reason"] = exc.status, _reason(exc.reason, exc.detail)
                return row
            row["attempts"] = previous_attempts + got.attempts
            try:
                result = finalize_section(got.path, clip_path, **slice_kw)
            except SliceInvalid as exc:
                raise _refine_section_problem(exc, url, entry, got.source_duration) from None
        else:
            row["attempts"] = previous_attempts + 1
            with local_copy(url) as src:
                result = slice_clip(src, clip_path, start=entry.start, **slice_kw)
        sha = sha256(clip_path)
        upload_file(clip_path, target)
        row.update(status="ok", reason="", path=target, duration=result.duration, sha256=sha,
                   silent=result.silent)
    except SliceInvalid as exc:
        row["status"], row["reason"] = "invalid", _reason(exc.reason, exc.detail)
    except Exception as exc:  # storage errors, timeouts, bugs: recorded, retried on demand
        row["status"] = "failed"
        row["reason"] = _reason("error", f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    row["updated_at"] = _now()
    return row


def _reason(code: str, detail: str = "") -> str:
    text = f"{code}: {redact(detail)}" if detail else code
    return text if len(text) <= 400 else text[:397] + "..."


def existing_clip_ids(storage: Storage, dataset: str) -> set[str]:
    """Clip ids with a visible clip file under ``clips/<dataset>/`` (one listing)."""
    names = (url.rsplit("/", 1)[-1] for url in storage.listdir("clips", dataset))
    return {n[:-4] for n in names if n.endswith(".mp4") and not n.startswith(".")}


def _adopt_existing(cfg: IngestConfig, storage: Storage, entry: ManifestEntry, batch_id: str,
                    existing: set[str] | None = None) -> dict | None:
    """A clip file present without an index row (a run killed after the upload): keep it if it
    is a whole clip of the right length. ``existing``: clip ids known to have a file (else
    asked of the storage)."""
    target = storage.url("clips", cfg.dataset_name, f"{entry.clip_id}.mp4")
    if existing is not None:
        if entry.clip_id not in existing:
            return None
    elif not storage.exists("clips", cfg.dataset_name, f"{entry.clip_id}.mp4"):
        return None
    duration = float(entry.end - entry.start)
    try:
        with local_copy(target) as path:
            info = check_source(path, 0.0, duration, tolerance=0.05)
            sha = sha256(path)
    except (SliceInvalid, OSError):
        return None
    row = _base_row(cfg, entry, batch_id)
    row.update(status="ok", path=target, duration=min(info["duration"] or duration, duration),
               sha256=sha, silent=None, attempts=0, updated_at=_now())
    return row


# ------------------------------------------------------------------------------ one batch

def _read_batch_part(storage: Storage, dataset: str, batch_id: str) -> dict[str, dict]:
    import pyarrow.parquet as pq

    from ial.storage import open_url
    from preprocessing.clip_index import clip_index_dir, validate_clip_index

    url = f"{clip_index_dir(storage, dataset)}/{batch_id}.parquet"
    if not storage.exists("clips", dataset, "index", f"{batch_id}.parquet"):
        return {}
    with open_url(url) as f:
        table = validate_clip_index(pq.read_table(f), url)
    return {r["clip_id"]: r for r in table.to_pylist()}


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
    carried = adopted = 0
    for entry in batch.entries:
        prev = previous.get(entry.clip_id)
        if prev is not None and (prev["status"] != "failed" or not cfg.retry_failed):
            row = dict(prev)
            row["batch"] = batch.batch_id
            rows[entry.clip_id] = row
            carried += 1
            continue
        if prev is None:
            row = _adopt_existing(cfg, storage, entry, batch.batch_id, existing)
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
        "finished_at": _now().isoformat(),
    }


# ------------------------------------------------------------------------------ whole run

@dataclasses.dataclass
class IngestPlan:
    cfg: IngestConfig
    batches: list[Batch]
    previous: dict[str, dict[str, dict]]  # batch_id → clip_id → earlier row
    existing: dict[str, set[str]]  # batch_id → clip ids with a file but no row (killed runs)
    entries: int
    duplicates: int
    skipped: list[tuple]  # malformed manifest rows: (line, reason)


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


def prepare(cfg: IngestConfig) -> IngestPlan:
    """Read the manifest, fix the batches, save the (redacted) config, load earlier rows, and
    sweep stale temporary files of killed runs."""
    if not cfg.manifest:
        raise ConfigError("manifest", "no manifest given")
    opts = dict(cfg.manifest_options)
    opts.setdefault("clip_seconds", cfg.clip_seconds)
    manifest = read_manifest(cfg.manifest, cfg.manifest_format,
                             skip_malformed=cfg.skip_malformed, **opts)
    prefix = batch_prefix(cfg.manifest)
    batches, duplicates = plan_batches(list(manifest), cfg.batch_size, prefix)
    storage = Storage(cfg.root)
    dataset = cfg.dataset_name
    sweep_stale_temps(storage, dataset)
    save_config(redacted_config(cfg), storage.url("clips", dataset, "ingest_config.yaml"))
    write_text(storage.url("clips", dataset, "stats", f"{prefix}.manifest.json"), json.dumps({
        "manifest": redact(cfg.manifest), "format": cfg.manifest_format,
        "entries": len(manifest), "duplicates": duplicates, "batches": len(batches),
        "skipped_malformed": [{"line": line, "reason": reason}
                              for line, reason in manifest.skipped],
    }, indent=2))
    index = read_clip_index(storage, dataset)
    by_clip = {r["clip_id"]: r for r in index.to_pylist()}
    previous = {b.batch_id: {e.clip_id: by_clip[e.clip_id] for e in b.entries
                             if e.clip_id in by_clip} for b in batches}
    files = existing_clip_ids(storage, dataset) - set(by_clip)
    existing = {b.batch_id: {e.clip_id for e in b.entries if e.clip_id in files} for b in batches}
    return IngestPlan(cfg, batches, previous, existing, len(manifest), duplicates,
                      list(manifest.skipped))


def summarize(plan: IngestPlan, stats: list[dict], seconds: float) -> dict:
    by_status: Counter = Counter()
    by_reason: Counter = Counter()
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
        "skipped": sum(s["carried_over"] + s["adopted"] for s in stats),  # already done
        "root": redact(plan.cfg.root),
        "manifest": redact(plan.cfg.manifest),
        "entries": plan.entries,
        "clips": sum(s["clips"] for s in stats),
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


def ingest(cfg: IngestConfig, progress: bool = True, client=None) -> dict:
    """Run the whole ingest of ``cfg.manifest``; returns a summary dict.

    Batches run one after another in this process (each with ``cfg.concurrency`` clips in
    flight), or as tasks on ``client`` (a ``dask.distributed.Client``; ``cfg.dask_address``
    connects one). The global rate limit is split over the batches that can run at once.
    """
    from tqdm.auto import tqdm

    started = time.time()
    plan = prepare(cfg)
    n_clips = sum(len(b.entries) for b in plan.batches)
    bar = tqdm(total=n_clips, desc=f"ingest {cfg.dataset_name}", unit="clip", disable=not progress)
    own_client = None
    if client is None and cfg.dask_address:
        from distributed import Client

        client = own_client = Client(cfg.dask_address)
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
    return summarize(plan, stats, time.time() - started)
