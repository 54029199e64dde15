"""The shard plan: which ``ok`` clips of the clip index go to which shard (deterministic and
append-only: new clip ids, sorted, fill new shards after the last one), and which shards are still
to write: those not complete, and complete ones holding a clip whose label or split the clip
index has changed since, or one no longer ``ok`` there (a re-ingest of an edited manifest
relabels clips: the label columns of their shards are written again, or training would read the
old split; a clip gone from the ok clips is dropped from its shard, or training would still read
it)."""
from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ial.errors import UserError
from ial.parquet_reading import read_parquet
from ial.runtime import check_scheduler
from ial.storage import Storage, atomic_write, exists, is_remote, read_text, sweep_orphan_temps
from preprocessing.clip_index import read_clip_index
from preprocessing.featurize.config import FeaturizeConfig, config_hash
from preprocessing.featurize.shard_task import LABEL_COLUMNS, ShardJob, clip_labels
from preprocessing.shards import (complete_shard_numbers, iter_shard_rows, shard_url,
                                  shards_dir, stats_url)

CLIP_COLUMNS = ("clip_id", "dataset", "label", "labels", "split", "path")


@dataclasses.dataclass
class FeaturizePlan:
    config_hash: str
    jobs: list[ShardJob]  # shards still to write
    complete: list[int]  # shards already complete and current (skipped)
    num_clips: int  # ok clips in the clip index (after the split filter)
    # complete, relabeled or holding a clip no longer ok: label columns written again, without it
    stale: list[int] = dataclasses.field(default_factory=list)


class NothingToFeaturize(UserError):
    """The dataset has no clip index under the root, or no ``ok`` clip in it."""


class FeaturizeMismatchError(UserError, RuntimeError):
    """Complete shards of the dataset were made with another featurize config/version."""


def _plan_url(root: Storage, dataset: str) -> str:
    return root.url("shards", dataset, "plan.parquet")


def _read_plan(root: Storage, dataset: str) -> dict[str, int]:
    url = _plan_url(root, dataset)
    if not exists(url):
        return {}
    table = read_parquet(url)
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


def datasets_with_clip_index(root: Storage) -> list[str]:
    """Names of the datasets under ``root/clips/`` that have a clip index."""
    names = [url.rstrip("/").rsplit("/", 1)[-1] for url in root.listdir("clips")]
    return sorted(n for n in names if root.listdir("clips", n, "index"))


def check_inputs(cfg: FeaturizeConfig) -> tuple[Storage, dict[str, dict]]:
    """Check the storage root, read the clip index and the config hash of any complete shard;
    writes nothing. Returns (root, the ok clips by id, after the split filter). Raises
    NothingToFeaturize when the dataset has no clip index or no ``ok`` clip, and
    FeaturizeMismatchError when complete shards were written under another config hash, so
    ``ial featurize`` can say it in one line before it starts a Prefect flow; and that
    ``cfg.dask_address``, if set, is a Dask scheduler's (``ial.runtime.check_scheduler``)."""
    root, clips, _ = _read_inputs(cfg)
    check_scheduler(cfg.dask_address)
    return root, clips


def _read_inputs(cfg: FeaturizeConfig) -> tuple[Storage, dict[str, dict], list[int]]:
    """``check_inputs``, and the numbers of the dataset's complete shards it listed."""
    root = Storage(cfg.root).check(what="storage root")
    index = read_clip_index(root, cfg.dataset)
    if index.num_rows == 0:
        known = datasets_with_clip_index(root)
        raise NothingToFeaturize(
            f"no clip index for dataset {cfg.dataset!r} under {root.url('clips', cfg.dataset)} "
            f"(datasets with a clip index under {root.root}: {', '.join(known) or 'none'}); "
            f"ingest it first, or fix --dataset")
    keep = pc.equal(index["status"], "ok")
    if cfg.splits is not None:
        keep = pc.and_(keep, pc.is_in(index["split"], pa.array(cfg.splits, pa.string())))
    clips = {}
    for r in index.filter(pc.fill_null(keep, False)).select(list(CLIP_COLUMNS)).to_pylist():
        r["path"] = _resolve_path(root, r["path"])
        clips[r["clip_id"]] = r
    if not clips:
        counts = Counter(index["status"].to_pylist())
        where = f" in splits {cfg.splits}" if cfg.splits is not None else ""
        raise NothingToFeaturize(
            f"dataset {cfg.dataset!r} has no ok clip{where} to featurize (clip index: "
            f"{', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    if cfg.visual_weights:  # a file that is no resnet18: said here, not by every worker
        from ial.models.resnet18 import build_trunk

        build_trunk(cfg.visual_weights, cfg.dilate_layer4, cfg.seed)
    return root, clips, _check_config_hash(root, cfg)


def _check_config_hash(root: Storage, cfg: FeaturizeConfig) -> list[int]:
    """Raise FeaturizeMismatchError when the dataset's complete shards were written under
    another config hash than ``cfg``'s (reads the first shard's stats only). Returns the
    complete shards' numbers."""
    complete = complete_shard_numbers(root, cfg.dataset)
    if not complete:
        return complete
    first = json.loads(read_text(stats_url(root, cfg.dataset, complete[0])))
    cfg_hash = config_hash(cfg)
    if first.get("config_hash") != cfg_hash:
        raise FeaturizeMismatchError(
            f"{shards_dir(root, cfg.dataset)} holds shards made with featurize config hash "
            f"{first.get('config_hash')} (featurizer {first.get('featurizer_version')}), "
            f"this config hashes to {cfg_hash}: featurize into another root/dataset name, or "
            f"remove those shards")
    return complete


def plan_shards(cfg: FeaturizeConfig, stale: list[int] | None = None) -> FeaturizePlan:
    """Assign the ``ok`` clips to shards (deterministic, append-only) and find the shards to write.

    Clips already in the plan keep their shard; new clip ids, sorted, fill new shards of
    ``clips_per_shard`` after the highest planned shard. Finding the relabeled complete shards
    reads the label columns of every complete shard; ``stale``: those a plan of the same run has
    just found (the Prefect flow passes its own down to its subflow), so they are read once.
    Raises FeaturizeMismatchError when
    complete shards were written under another config hash, and NothingToFeaturize (before
    writing anything) when the dataset has no clip index or no ``ok`` clip.
    """
    root, clips, complete = _read_inputs(cfg)
    sweep_orphan_temps()  # shard files of killed workers on this host (never a complete shard)
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
    if stale is None:
        stale = [n for n in complete if _relabeled(root, cfg.dataset, n, clips)]
    else:
        stale = sorted(set(stale) & set(complete))
    done = set(complete) - set(stale)
    jobs = []
    for shard in sorted(by_shard):
        if shard in done:
            continue
        ids = sorted(by_shard[shard])
        jobs.append(ShardJob(shard, [clips[c] for c in ids if c in clips],
                             [c for c in ids if c not in clips], rewrite=shard in stale))
    return FeaturizePlan(config_hash(cfg), jobs, sorted(done), len(clips), stale)


def _relabeled(root: Storage, dataset: str, shard: int, clips: dict[str, dict]) -> bool:
    """Whether complete ``shard`` holds a clip whose label, labels or split differ from the clip
    index's, or a clip no longer ``ok`` there (``clips``: the ok clips by id, after the split
    filter): its rows are written again, without that clip. Reads only the label columns."""
    for row in iter_shard_rows(shard_url(root, dataset, shard), ["clip_id", *LABEL_COLUMNS]):
        now = clips.get(row["clip_id"])
        if now is None or clip_labels(row) != clip_labels(now):
            return True
    return False
