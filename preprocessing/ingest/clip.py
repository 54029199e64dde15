"""One clip: download the exact section (yt-dlp), slice it (ffmpeg), validate and upload it,
and return its clip index row (every outcome named); or adopt a whole clip file that a killed
run left."""
from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from typing import Callable

from ial.storage import Storage, local_copy, sha256, temp_prefix, upload_file
from preprocessing.ingest.config import IngestConfig
from preprocessing.ingest.download import download_with_retries
from preprocessing.ingest.manifests import ManifestEntry
from preprocessing.ingest.outcomes import DownloadProblem, redact
from preprocessing.ingest.slicing import (SliceInvalid, check_source, clip_encode_args,
                                          finalize_section, measure_clip, slice_clip)


def now_utc() -> dt.datetime:
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
        "updated_at": now_utc(),
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
    tmp = tempfile.mkdtemp(prefix=temp_prefix("ingest"))
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
                result = finalize_section(got.path, clip_path, start=got.offset, **slice_kw)
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
    row["updated_at"] = now_utc()
    return row


def _reason(code: str, detail: str = "") -> str:
    text = f"{code}: {redact(detail)}" if detail else code
    return text if len(text) <= 400 else text[:397] + "..."


def existing_clip_ids(storage: Storage, dataset: str) -> set[str]:
    """Clip ids with a visible clip file under ``clips/<dataset>/`` (one listing)."""
    names = (url.rsplit("/", 1)[-1] for url in storage.listdir("clips", dataset))
    return {n[:-4] for n in names if n.endswith(".mp4") and not n.startswith(".")}


def adopt_existing(cfg: IngestConfig, storage: Storage, entry: ManifestEntry, batch_id: str,
                   existing: set[str] | None = None) -> dict | None:
    """A clip file present without an index row (a run killed after the upload): keep it if it
    is a whole clip of the right length, with its silence check run as for a new clip.
    ``existing``: clip ids known to have a file (else asked of the storage)."""
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
            level = measure_clip(path).max_volume_db
            sha = sha256(path)
    except (SliceInvalid, OSError):
        return None
    row = _base_row(cfg, entry, batch_id)
    row.update(status="ok", path=target, duration=min(info["duration"] or duration, duration),
               sha256=sha, silent=bool(level is None or level <= cfg.silence_db), attempts=0,
               updated_at=now_utc())
    return row
