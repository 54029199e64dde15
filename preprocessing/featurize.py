"""Featurization: ``ok`` clips of the clip index → Parquet feature shards (Dask, local or S3).

Per clip (``featurize_clip``; ``ial separate`` featurizes a user's video the same way):

- one ffmpeg process per clip (``preprocessing.clip_decode``) gives the audio and the frames;
- audio: mono s16le @ 11025 Hz → padded/trimmed to 110250 samples (pad recorded);
- spec: ``ial.signal.log_magnitude`` (STFT 1022/256 warped to 256 log bins — the model's code);
- frames: K frames at ``cfg.frame_times`` (scale short side, centre crop), stored as JPEG;
- frame features: frozen ResNet-18 trunk on the *decoded JPEGs* (so features recomputed from the
  stored frames match), (K, 512, S/16, S/16) stored as float16.

Per shard (``featurize_shard``, one Dask task): clips stream through in batches of
``batch_clips`` (the next batch decodes in threads while the ResNet runs on the current one), rows
go to a local Parquet file one row group at a time (memory does not grow with the shard), the
finished file is committed with ``upload_file`` and the stats JSON is written last: it marks the
shard complete. A clip that fails to decode is recorded with its reason in the stats and skipped.

Run (``featurize``): ``plan_shards`` assigns clips to shards deterministically (an append-only
plan: sorted new clip ids fill new shards after the last one) and skips complete shards; one task
per remaining shard runs on a Dask cluster (LocalCluster by default, ``dask_address`` for a running
scheduler); a worker that dies has its shard re-run elsewhere, and since a shard becomes visible
only whole, every clip lands in exactly one shard once. Finally the dataset index is rebuilt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import resource
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ial.config import save_config, to_dict
from ial.signal import CLIP_SAMPLES
from ial.storage import (Storage, exists, is_remote, local_copy, read_bytes, read_text,
                         upload_file, write_text, atomic_write)
from preprocessing.clip_index import read_clip_index
from preprocessing.featurize_config import (FEATURIZER_VERSION, RUN_FIELDS, FeaturizeConfig,
                                            config_hash)
from preprocessing.clip_decode import decode_media
from preprocessing.frames import decode_jpeg, encode_jpeg
from preprocessing.shard_schema import SHARD_SCHEMA, encode_row, with_metadata
from preprocessing.shards import (complete_shard_numbers, shard_name, shard_url, shards_dir,
                                  stats_url, write_dataset_index)

log = logging.getLogger("ial.featurize")

RANDOM_INIT_WARNING = ("NO VISUAL WEIGHTS: frame features come from a RANDOMLY INITIALISED "
                       "ResNet-18 (seeded). Pass --visual-weights PATH (torchvision resnet18 "
                       "ImageNet .pth) for meaningful features.")
CLIP_COLUMNS = ("clip_id", "dataset", "label", "labels", "split", "path")


# ----------------------------------------------------------------------------------- per clip

_BACKBONES: dict[tuple, tuple[Any, str]] = {}
# Two shard tasks of one Dask worker, ``client.run`` beside a task or Prefect's thread runner may
# ask at once: one process-wide lock builds each trunk once per process.
_BACKBONES_LOCK = threading.Lock()


def load_backbone(cfg: FeaturizeConfig):
    """The frozen ResNet-18 trunk for ``cfg`` and its weights description, cached per process
    (built once, under a lock, so concurrent callers share one trunk). With
    ``cfg.optimize_inference`` it is the ``InferenceTrunk`` (BN folded, channels-last, Winograd
    3x3 convs: ~2.3x faster on CPU, outputs within ~1e-5 of eager), else the eager trunk."""
    from ial.models.resnet18 import InferenceTrunk, build_trunk

    key = (cfg.visual_weights, cfg.dilate_layer4, cfg.seed, cfg.optimize_inference)
    with _BACKBONES_LOCK:
        if key not in _BACKBONES:
            model, description = build_trunk(cfg.visual_weights, cfg.dilate_layer4, cfg.seed)
            _BACKBONES[key] = (InferenceTrunk(model) if cfg.optimize_inference else model,
                               description)
        return _BACKBONES[key]


# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_tensor_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Let this process reuse freed heap pages for its per-batch tensors (glibc only).

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; setting that variable
    turns off glibc's adaptive mmap threshold, so every tensor over 128 KiB is mmap'd and its
    pages faulted in again on every batch: the ResNet ran ~10% slower and the Winograd trunk
    lost its whole gain (~0.08 s per clip). A fixed mmap threshold (32 MiB, glibc's maximum) and
    a 256 MiB trim threshold keep the pages; peak RSS stays flat in the number of clips.
    Returns False where mallopt is unavailable (not glibc): then nothing changes.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
                and mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def prepare_worker(cfg: FeaturizeConfig):
    """Set this process up for featurizing (torch threads, ``keep_tensor_memory``) and return
    ``load_backbone(cfg)``: what a shard task does before its first clip."""
    import torch

    torch.set_num_threads(cfg.torch_threads)
    keep_tensor_memory()
    return load_backbone(cfg)


def decode_clip(path: str, cfg: FeaturizeConfig) -> dict:
    """Decode one clip (local path or URL): audio, JPEG frames and the decoded JPEG pixels.

    Returns ``audio`` (110250,) float32, ``audio_pad`` (samples), ``frames`` K JPEG bytes,
    ``pixels`` (K, S, S, 3) uint8 (decoded from the JPEGs), ``frame_times`` (s).
    """
    with local_copy(path) as local:
        if not os.path.exists(local):
            raise FileNotFoundError(f"clip file not found: {path}")
        audio, pad, raw = decode_media(local, list(cfg.frame_times), cfg.frame_size,
                                       CLIP_SAMPLES)
    jpegs = [encode_jpeg(f, cfg.jpeg_quality) for f in raw]
    pixels = np.stack([decode_jpeg(j) for j in jpegs])
    return {"audio": audio, "audio_pad": pad, "frames": jpegs, "pixels": pixels,
            "frame_times": [float(t) for t in cfg.frame_times]}


def compute_features(decoded: list[dict], backbone) -> None:
    """Add ``spec`` (256, T) float32 and ``frame_features`` (K, 512, h, w) float32 to each decoded
    clip, running the STFT and the ResNet once over the whole batch. Drops ``pixels``."""
    import torch

    from ial.models.resnet18 import imagenet_normalize
    from ial.signal import log_magnitude

    if not decoded:
        return
    with torch.inference_mode():
        waves = torch.from_numpy(np.stack([d["audio"] for d in decoded]))
        specs = log_magnitude(waves).numpy()  # (B, 256, T)
        pixels = np.concatenate([d["pixels"] for d in decoded])  # (B*K, S, S, 3)
        feats = backbone(imagenet_normalize(pixels)).numpy()  # (B*K, 512, h, w)
    k = decoded[0]["pixels"].shape[0]
    for i, d in enumerate(decoded):
        d["spec"] = specs[i]
        d["frame_features"] = feats[i * k:(i + 1) * k]
        del d["pixels"]


def featurize_clip(path: str, cfg: FeaturizeConfig, backbone=None) -> dict:
    """All features of one clip, exactly as the shards store them (before float16/int16).

    Returns ``audio`` (110250,) float32 samples @ 11025 Hz, ``audio_pad`` (samples padded >0 /
    trimmed <0), ``spec`` (256, T=431) float32, ``frames`` K JPEG bytes, ``frame_times`` (s),
    ``frame_features`` (K, 512, S/16, S/16) float32. ``backbone``: a ResNet18Trunk (default: the
    one ``cfg`` describes).
    """
    if backbone is None:
        backbone, _ = load_backbone(cfg)
    clip = decode_clip(path, cfg)
    compute_features([clip], backbone)
    return clip


# ---------------------------------------------------------------------------------- per shard

@dataclasses.dataclass
class ShardJob:
    """One shard to write: its number and its clips (dicts with CLIP_COLUMNS)."""

    shard: int
    clips: list[dict]
    missing: list[str] = dataclasses.field(default_factory=list)  # planned, no longer ok


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
    """Write one shard (skipped when already complete) and return its stats.

    Idempotent: re-running a shard whose task died rewrites the same file; the stats file is
    written last and marks the shard complete.
    """
    root = Storage(cfg.root)
    marker = stats_url(root, cfg.dataset, job.shard)
    if exists(marker):
        return {**json.loads(read_text(marker)), "skipped": True}
    start = time.perf_counter()
    backbone, weights = prepare_worker(cfg)
    if weights.startswith("none"):
        log.warning("%s %s", shard_name(job.shard), RANDOM_INIT_WARNING)
    schema = with_metadata(SHARD_SCHEMA, shard_file_metadata(cfg, cfg_hash, weights, job.shard))
    clip_ids: list[str] = []
    failed = [{"clip_id": c, "reason": "no longer status ok in the clip index"} for c in job.missing]
    splits: dict[str, int] = {}
    classes: dict[str, int] = {}
    batches = [job.clips[i:i + cfg.batch_clips] for i in range(0, len(job.clips), cfg.batch_clips)]
    fd, tmp = tempfile.mkstemp(prefix=f"ial-{shard_name(job.shard)}-", suffix=".parquet")
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
                compute_features([r for _, r in good], backbone)
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
        "peak_rss_mb": round(_peak_rss_mb(), 1), "worker": f"{socket.gethostname()}:{os.getpid()}",
        "featurizer_version": FEATURIZER_VERSION, "config_hash": cfg_hash,
        "visual_weights": weights,
    }
    if weights.startswith("none"):
        stats["visual_weights_warning"] = RANDOM_INIT_WARNING
    write_text(marker, json.dumps(stats, indent=1))  # last: marks the shard complete
    return stats


# ------------------------------------------------------------------------------------ planning

@dataclasses.dataclass
class FeaturizePlan:
    config_hash: str
    jobs: list[ShardJob]  # shards still to write
    complete: list[int]  # shards already complete (skipped)
    num_clips: int  # ok clips in the clip index (after the split filter)


class FeaturizeMismatchError(RuntimeError):
    """Complete shards of the dataset were made with another featurize config/version."""


def _plan_url(root: Storage, dataset: str) -> str:
    return root.url("shards", dataset, "plan.parquet")


def _read_plan(root: Storage, dataset: str) -> dict[str, int]:
    url = _plan_url(root, dataset)
    if not exists(url):
        return {}
    table = pq.read_table(io.BytesIO(read_bytes(url)))
    return dict(zip(table["clip_id"].to_pylist(), table["shard"].to_pylist()))


def _write_plan(root: Storage, dataset: str, plan: dict[str, int]) -> None:
    ids = sorted(plan, key=lambda c: (plan[c], c))
    table = pa.table({"clip_id": pa.array(ids, pa.string()),
                      "shard": pa.array([plan[c] for c in ids], pa.int32())})
    with atomic_write(_plan_url(root, dataset)) as f:
        pq.write_table(table, f)


def _resolve_path(root: Storage, path: str) -> str:
    """Clip paths in the index are URLs; a relative one is taken under the root."""
    if is_remote(path) or path.startswith("file://") or os.path.isabs(path):
        return path
    return root.url(path)


def plan_shards(cfg: FeaturizeConfig) -> FeaturizePlan:
    """Assign the ``ok`` clips to shards (deterministic, append-only) and find the shards to write.

    Clips already in the plan keep their shard; new clip ids, sorted, fill new shards of
    ``clips_per_shard`` after the highest planned shard. Raises FeaturizeMismatchError when
    complete shards were written under another config hash.
    """
    root = Storage(cfg.root)
    cfg_hash = config_hash(cfg)
    complete = complete_shard_numbers(root, cfg.dataset)
    if complete:
        first = json.loads(read_text(stats_url(root, cfg.dataset, complete[0])))
        if first.get("config_hash") != cfg_hash:
            raise FeaturizeMismatchError(
                f"{shards_dir(root, cfg.dataset)} holds shards made with featurize config hash "
                f"{first.get('config_hash')} (featurizer {first.get('featurizer_version')}), "
                f"this config hashes to {cfg_hash}: featurize into another root/dataset name, or "
                f"remove those shards")
    index = read_clip_index(root, cfg.dataset)
    keep = pc.equal(index["status"], "ok")
    if cfg.splits is not None:
        keep = pc.and_(keep, pc.is_in(index["split"], pa.array(cfg.splits, pa.string())))
    clips = {}
    for r in index.filter(pc.fill_null(keep, False)).select(list(CLIP_COLUMNS)).to_pylist():
        r["path"] = _resolve_path(root, r["path"])
        clips[r["clip_id"]] = r
    plan = _read_plan(root, cfg.dataset)
    new = sorted(c for c in clips if c not in plan)
    if new:
        nxt = max(plan.values()) + 1 if plan else 0
        for i, clip_id in enumerate(new):
            plan[clip_id] = nxt + i // cfg.clips_per_shard
        _write_plan(root, cfg.dataset, plan)
    by_shard: dict[int, list[str]] = {}
    for clip_id, shard in plan.items():
        by_shard.setdefault(shard, []).append(clip_id)
    done = set(complete)
    jobs = []
    for shard in sorted(by_shard):
        if shard in done:
            continue
        ids = sorted(by_shard[shard])
        jobs.append(ShardJob(shard, [clips[c] for c in ids if c in clips],
                             [c for c in ids if c not in clips]))
    return FeaturizePlan(cfg_hash, jobs, complete, len(clips))


# ---------------------------------------------------------------------------------------- run

# Worker settings of the LocalCluster featurize starts. It has no dashboard, so the profiler's
# 10 ms stack samples have no reader; with the 100 ms memory monitor and the 20 ms event-loop
# tick they cost a CPU-bound worker ~4% of its throughput (measured on 2 cores). A cluster given
# by ``dask_address`` keeps its own settings (docs/scaling.md suggests the same ones).
LOCAL_WORKER_CONFIG = {"distributed.worker.profile.enabled": False,
                       "distributed.worker.memory.monitor-interval": "1s",
                       "distributed.admin.tick.interval": "500ms"}


@contextlib.contextmanager
def dask_client(cfg: FeaturizeConfig, client=None):
    """The given client, a client of ``cfg.dask_address``, or a fresh LocalCluster's client
    (``cfg.n_workers`` processes × ``cfg.threads_per_worker`` threads, ``LOCAL_WORKER_CONFIG``)."""
    if client is not None:
        yield client
        return
    import dask
    from distributed import Client, LocalCluster

    if cfg.dask_address:
        with Client(cfg.dask_address) as c:
            yield c
        return
    env = {"OMP_NUM_THREADS": str(cfg.torch_threads), "MKL_NUM_THREADS": str(cfg.torch_threads)}
    with dask.config.set(LOCAL_WORKER_CONFIG):  # the nannies pass it on to their workers
        cluster = LocalCluster(n_workers=cfg.n_workers, threads_per_worker=cfg.threads_per_worker,
                               processes=True, dashboard_address=None, env=env)
    with cluster, Client(cluster) as c:
        yield c


def summarize(cfg: FeaturizeConfig, plan: FeaturizePlan, results: list[dict], seconds: float,
              index: dict) -> dict:
    written = [r for r in results if not r.get("skipped")]
    clips_done = sum(r["rows"] + len(r["failed"]) for r in written)
    weights = sorted({r["visual_weights"] for r in results}) or index.get("visual_weights", [])
    summary = {
        "dataset": cfg.dataset, "root": cfg.root, "config_hash": plan.config_hash,
        "featurizer_version": FEATURIZER_VERSION, "ok_clips": plan.num_clips,
        "shards_total": index["num_shards"], "shards_written": len(written),
        "shards_skipped": len(plan.complete) + len(results) - len(written),
        "rows_written": sum(r["rows"] for r in written),
        "clips_failed": sum(len(r["failed"]) for r in written),
        "failures": [f for r in written for f in r["failed"]][:50],
        "seconds": round(seconds, 3),
        "clips_per_second": round(clips_done / seconds, 3) if written and seconds > 0 else None,
        "worker_peak_rss_mb": max((r["peak_rss_mb"] for r in written), default=None),
        "visual_weights": weights, "dataset_rows": index["rows"], "splits": index["splits"],
    }
    # short names read by the nightly flow's summary table
    summary.update(written=summary["shards_written"], skipped=summary["shards_skipped"],
                   shards=summary["shards_total"], rows=summary["dataset_rows"])
    if any(str(w).startswith("none") for w in weights):
        summary["visual_weights_warning"] = RANDOM_INIT_WARNING
    return summary


def featurize(cfg: FeaturizeConfig, client=None, progress: bool = True) -> dict:
    """Featurize the ok clips of ``cfg.dataset`` under ``cfg.root`` into shards; returns a summary.

    ``client``: a ``distributed.Client`` to use; otherwise ``cfg.dask_address`` or a LocalCluster
    of ``cfg.n_workers`` processes. Complete shards are skipped, so a re-run does no work.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    root = Storage(cfg.root)
    plan = plan_shards(cfg)
    save_config(cfg, root.url("shards", cfg.dataset, "config.yaml"))
    if cfg.visual_weights is None:
        log.warning(RANDOM_INIT_WARNING)
    results: list[dict] = []
    if plan.jobs:
        from distributed import as_completed

        with dask_client(cfg, client) as c:
            futures = [c.submit(featurize_shard, cfg, job, plan.config_hash, pure=False,
                                retries=cfg.retries,
                                key=f"featurize-{cfg.dataset}-{shard_name(job.shard)}-"
                                    f"{plan.config_hash[:8]}")
                       for job in plan.jobs]
            bar = tqdm(total=sum(len(j.clips) for j in plan.jobs), unit="clip",
                       desc=f"featurize {cfg.dataset}", disable=not progress)
            for fut in as_completed(futures):
                stats = fut.result()
                results.append(stats)
                bar.update(stats["rows"] + len(stats["failed"]))
            bar.close()
    index = write_dataset_index(root, cfg.dataset)
    return summarize(cfg, plan, results, time.perf_counter() - start, index)
