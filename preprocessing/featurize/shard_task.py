"""One shard task (one Dask task): its clips streamed through in batches, rows written to a local
Parquet file one row group at a time, the file committed whole, the stats JSON written last (its
presence marks the shard complete). A clip that fails to decode is recorded with its reason.
A complete shard whose clips were relabeled since keeps its features: only its label columns are
written again (``relabel_shard``)."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq

from ial.config import to_dict
from ial.parquet_reading import iter_parquet_row_groups, read_parquet_schema
from ial.runtime import worker_name
from ial.storage import Storage, exists, read_text, temp_prefix, upload_file, write_text
from preprocessing.featurize.config import FEATURIZER_VERSION, RUN_FIELDS, FeaturizeConfig
from preprocessing.featurize.features import compute_features, decode_clip, prepare_worker
from preprocessing.shard_schema import SHARD_SCHEMA, encode_row, with_metadata
from preprocessing.shards import shard_name, shard_url, stats_url

log = logging.getLogger("ial.featurize")

RANDOM_INIT_WARNING = ("NO VISUAL WEIGHTS: frame features come from a RANDOMLY INITIALISED "
                       "ResNet-18 (seeded). Pass --visual-weights PATH (torchvision resnet18 "
                       "ImageNet .pth) for meaningful features.")


@dataclasses.dataclass
class ShardJob:
    """One shard to write: its number and its clips (dicts with CLIP_COLUMNS)."""

    shard: int
    clips: list[dict]
    missing: list[str] = dataclasses.field(default_factory=list)  # planned, no longer ok
    rewrite: bool = False  # complete, but a clip's label/split changed since: relabeled


# A clip that raises one of these is recorded as failed and skipped (ffmpeg could not decode it,
# no audio/frames, missing file). Anything else (an S3 connection error, ...) fails the shard
# task, which Dask/Prefect retry: a transient error must not drop a clip for good.
CLIP_ERRORS = (RuntimeError, ValueError, FileNotFoundError, subprocess.TimeoutExpired)


def _decode_safe(clip: dict, cfg: FeaturizeConfig) -> tuple[dict, dict | str]:
    try:
        return clip, decode_clip(clip["path"], cfg)
    except CLIP_ERRORS as exc:  # recorded per clip; the shard completes without it
        return clip, f"{type(exc).__name__}: {exc}"[:500]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def shard_file_metadata(cfg: FeaturizeConfig, cfg_hash: str, weights: str, shard: int) -> dict:
    """Parquet metadata (under b"ial") of a shard: version, config hash, config, visual weights."""
    meta = {"featurizer_version": FEATURIZER_VERSION, "config_hash": cfg_hash,
            "config": {k: v for k, v in to_dict(cfg).items() if k not in RUN_FIELDS},
            "dataset": cfg.dataset, "shard": shard_name(shard), "visual_weights": weights}
    if weights.startswith("none"):
        meta["visual_weights_warning"] = RANDOM_INIT_WARNING
    return meta


def featurize_shard(cfg: FeaturizeConfig, job: ShardJob, cfg_hash: str) -> dict:
    """Write one shard (skipped when already complete, unless ``job.rewrite``) and return its
    stats.

    Idempotent: re-running a shard whose task died rewrites the same file; the stats file is
    written last and marks the shard complete.
    """
    root = Storage(cfg.root)
    marker = stats_url(root, cfg.dataset, job.shard)
    if exists(marker):
        if job.rewrite:
            return relabel_shard(cfg, job)
        return {**json.loads(read_text(marker)), "skipped": True}
    start = time.perf_counter()
    backbone, weights = prepare_worker(cfg)
    if weights.startswith("none"):  # info: the run warns once; each shard records it (meta, stats)
        log.info("%s %s", shard_name(job.shard), RANDOM_INIT_WARNING)
    schema = with_metadata(SHARD_SCHEMA, shard_file_metadata(cfg, cfg_hash, weights, job.shard))
    clip_ids: list[str] = []
    failed = [{"clip_id": c, "reason": "no longer status ok in the clip index"}
              for c in job.missing]
    splits: dict[str, int] = {}
    classes: dict[str, int] = {}
    batches = [job.clips[i:i + cfg.batch_clips] for i in range(0, len(job.clips), cfg.batch_clips)]
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix("shard"),
                                suffix=f"-{shard_name(job.shard)}.parquet")
    os.close(fd)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool, \
                pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            pending: list[dict] = []
            upcoming = [pool.submit(_decode_safe, c, cfg) for c in batches[0]] if batches else []
            for b in range(len(batches)):
                current = upcoming  # decode of batch b+1 overlaps the ResNet on batch b
                upcoming = ([pool.submit(_decode_safe, c, cfg) for c in batches[b + 1]]
                            if b + 1 < len(batches) else [])
                good = []
                for fut in current:
                    clip, result = fut.result()
                    if isinstance(result, str):
                        failed.append({"clip_id": clip["clip_id"], "reason": result})
                        log.warning("clip %s skipped: %s", clip["clip_id"], result)
                    else:
                        good.append((clip, result))
                compute_features([r for _, r in good], backbone, cfg.low_level_features)
                for clip, r in good:
                    pending.append(encode_row(
                        clip_id=clip["clip_id"], dataset=clip["dataset"], label=clip["label"] or "",
                        labels=list(clip["labels"] or []), split=clip["split"] or "",
                        audio=r["audio"], audio_pad=r["audio_pad"], spec=r["spec"],
                        frames=r["frames"], frame_times=r["frame_times"],
                        frame_features=r["frame_features"]))
                    clip_ids.append(clip["clip_id"])
                    split, label = clip["split"] or "", clip["label"] or ""
                    splits[split] = splits.get(split, 0) + 1
                    classes[label] = classes.get(label, 0) + 1
                del good
                if len(pending) >= cfg.row_group_clips:
                    writer.write_table(pa.Table.from_pylist(pending, schema))
                    pending = []
            if pending:
                writer.write_table(pa.Table.from_pylist(pending, schema))
        size = os.path.getsize(tmp)
        upload_file(tmp, shard_url(root, cfg.dataset, job.shard))
    finally:
        os.unlink(tmp)
    seconds = time.perf_counter() - start
    stats = {
        "shard": shard_name(job.shard), "dataset": cfg.dataset, "rows": len(clip_ids),
        "clip_ids": clip_ids, "failed": failed, "splits": splits, "classes": classes,
        "bytes": size, "seconds": round(seconds, 3),
        "clips_per_second": round(len(job.clips) / seconds, 3) if seconds > 0 else None,
        "peak_rss_mb": round(_peak_rss_mb(), 1), "worker": worker_name(),
        "featurizer_version": FEATURIZER_VERSION, "config_hash": cfg_hash,
        "visual_weights": weights,
    }
    if weights.startswith("none"):
        stats["visual_weights_warning"] = RANDOM_INIT_WARNING
    write_text(marker, json.dumps(stats, indent=1))  # last: marks the shard complete
    return stats


LABEL_COLUMNS = ("label", "labels", "split")


def clip_labels(row: dict) -> tuple:
    """A clip's (label, labels, split) as a shard stores them (None as empty), from a clip-index
    or shard row: what relabeling compares and writes."""
    return row["label"] or "", list(row["labels"] or []), row["split"] or ""


def relabel_shard(cfg: FeaturizeConfig, job: ShardJob) -> dict:
    """Write a complete shard again with its clips' label, labels and split from the clip index
    (``job.clips``), keeping every stored feature: row group by row group, no decoding, no
    ResNet. Rows of clips no longer ok (``job.missing``) are dropped and recorded as failed; the
    clips that failed before stay failed (as in any complete shard). Returns the new stats
    (``relabeled``: rows whose labels changed).

    The new stats are written before the file is committed (whole): a run killed between the two
    leaves the old labels in the file, which the next plan finds relabeled again and mends.
    """
    root = Storage(cfg.root)
    url = shard_url(root, cfg.dataset, job.shard)
    marker = stats_url(root, cfg.dataset, job.shard)
    start = time.perf_counter()
    old = json.loads(read_text(marker))
    now = {c["clip_id"]: clip_labels(c) for c in job.clips}
    schema = read_parquet_schema(url)  # with the shard's metadata (config, weights)
    clip_ids: list[str] = []
    changed = 0
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix("shard"),
                               suffix=f"-{shard_name(job.shard)}.parquet")
    os.close(fd)
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for group in iter_parquet_row_groups(url):
                ids = group["clip_id"].to_pylist()
                group = group.filter(pa.array([c in now for c in ids]))
                ids = [c for c in ids if c in now]
                before = zip(*(group[name].to_pylist() for name in LABEL_COLUMNS))
                changed += sum(tuple(b) != now[c] for b, c in zip(before, ids))
                for i, name in enumerate(LABEL_COLUMNS):
                    field = schema.field(name)
                    group = group.set_column(schema.get_field_index(name), field,
                                             pa.array([now[c][i] for c in ids], field.type))
                writer.write_table(group.cast(schema))
                clip_ids += ids
        stats = _relabeled_stats(old, job, clip_ids, now, changed, os.path.getsize(tmp),
                                 time.perf_counter() - start)
        write_text(marker, json.dumps(stats, indent=1))
        upload_file(tmp, url)
    finally:
        os.unlink(tmp)
    log.info("%s relabeled in place: %d of %d rows changed (%.1f s)", shard_name(job.shard),
             changed, len(clip_ids), stats["relabel_seconds"])
    return stats


def _relabeled_stats(old: dict, job: ShardJob, clip_ids: list[str], now: dict[str, tuple],
                     changed: int, size: int, seconds: float) -> dict:
    """A relabeled shard's stats: the old ones with its rows, splits, classes and failures anew."""
    splits: dict[str, int] = {}
    classes: dict[str, int] = {}
    for c in clip_ids:
        label, _, split = now[c]
        splits[split] = splits.get(split, 0) + 1
        classes[label] = classes.get(label, 0) + 1
    failed_before = {f["clip_id"] for f in old.get("failed", [])}
    gone = [{"clip_id": c, "reason": "no longer status ok in the clip index"}
            for c in job.missing if c not in failed_before]
    return {**old, "rows": len(clip_ids), "clip_ids": clip_ids,
            "failed": old.get("failed", []) + gone, "splits": splits, "classes": classes,
            "bytes": size, "relabeled": changed, "relabel_seconds": round(seconds, 3),
            "worker": worker_name()}
