"""Featurization: ``ok`` clips of the clip index → Parquet feature shards (Dask, local or S3).

Per clip (``featurize_clip``; ``ial separate`` featurizes a user's video the same way):

- one ffmpeg process per clip (``preprocessing.featurize.clip_decode``) gives the audio and the
  frames;
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
plan: sorted new clip ids fill new shards after the last one) and skips complete shards (unless
a clip's label/split changed in the clip index since: those are written again); one task
per remaining shard runs on a Dask cluster (LocalCluster by default, ``dask_address`` for a running
scheduler); a worker that dies has its shard re-run elsewhere, and since a shard becomes visible
only whole, every clip lands in exactly one shard once. Finally the dataset index is rebuilt.
"""
from __future__ import annotations

import contextlib
import logging
import time

from ial.config import save_config
from ial.errors import UserError
from ial.runtime import local_cluster_kwargs as runtime_cluster_kwargs
from ial.runtime import connect_scheduler, quiet_dask_shutdown
from ial.storage import Storage
from preprocessing.featurize.config import FEATURIZER_VERSION, FeaturizeConfig
from preprocessing.featurize.planning import FeaturizePlan, plan_shards
from preprocessing.featurize.shard_task import RANDOM_INIT_WARNING, featurize_shard
from preprocessing.shards import shard_name, write_dataset_index

log = logging.getLogger("ial.featurize")


# ---------------------------------------------------------------------------------------- run

def local_cluster_kwargs(cfg: FeaturizeConfig) -> dict:
    """Keyword arguments of the LocalCluster featurize starts (here and in the Prefect flow's
    DaskTaskRunner): ``cfg.n_workers`` processes × ``cfg.threads_per_worker`` threads with
    ``cfg.torch_threads`` torch threads each (``ial.runtime.local_cluster_kwargs``)."""
    return runtime_cluster_kwargs(cfg.n_workers, cfg.threads_per_worker, cfg.torch_threads)


@contextlib.contextmanager
def dask_client(cfg: FeaturizeConfig, client=None):
    """The given client, a client of ``cfg.dask_address``, or a fresh LocalCluster's client
    (``local_cluster_kwargs``)."""
    if client is not None:
        yield client
        return
    from distributed import Client, LocalCluster

    quiet_dask_shutdown()
    if cfg.dask_address:
        with connect_scheduler(cfg.dask_address) as c:
            yield c
        return
    cluster = LocalCluster(**local_cluster_kwargs(cfg))
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


def prepare(cfg: FeaturizeConfig, logger: logging.Logger | logging.LoggerAdapter = log
            ) -> FeaturizePlan:
    """Plan a run's shards and save its config beside them (``shards/<dataset>/config.yaml``);
    warn on ``logger`` of random visual weights and of complete shards to relabel."""
    plan = plan_shards(cfg)
    save_config(cfg, Storage(cfg.root).url("shards", cfg.dataset, "config.yaml"))
    if cfg.visual_weights is None:
        logger.warning(RANDOM_INIT_WARNING)
    if plan.stale:
        logger.warning("%d complete shards of %s hold clips whose label/split the clip index has "
                       "changed since, or that are no longer ok there: writing their labels "
                       "again without those clips, features kept (%s)",
                       len(plan.stale), cfg.dataset,
                       ", ".join(shard_name(n) for n in plan.stale[:5])
                       + (", ..." if len(plan.stale) > 5 else ""))
    return plan


def finish(cfg: FeaturizeConfig, plan: FeaturizePlan, results: list[dict],
           seconds: float) -> dict:
    """Write the dataset index over every shard and return the run's summary, or raise
    ``NothingFeaturized`` when every clip it tried failed (``check_outcome``)."""
    index = write_dataset_index(Storage(cfg.root), cfg.dataset)
    return check_outcome(summarize(cfg, plan, results, seconds, index))


def featurize(cfg: FeaturizeConfig, client=None, progress: bool = True) -> dict:
    """Featurize the ok clips of ``cfg.dataset`` under ``cfg.root`` into shards; returns a summary.

    ``client``: a ``distributed.Client`` to use; otherwise ``cfg.dask_address`` or a LocalCluster
    of ``cfg.n_workers`` processes. Complete shards are skipped, so a re-run does no work.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    plan = prepare(cfg)
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
    return finish(cfg, plan, results, time.perf_counter() - start)


class NothingFeaturized(UserError):
    """Every clip a featurize run tried failed to decode."""


def check_outcome(summary: dict) -> dict:
    """``summary`` unchanged unless every clip this run tried failed (then ``NothingFeaturized``,
    naming the first reasons); a run with some failures succeeds, with the counts."""
    if summary["rows_written"] > 0 or summary["clips_failed"] == 0:
        return summary
    reasons = "; ".join(f"{f['clip_id']}: {f['reason']}" for f in summary["failures"][:3])
    raise NothingFeaturized(f"all {summary['clips_failed']} clips of {summary['dataset']!r} "
                            f"failed to decode (first: {reasons}); see shards/"
                            f"{summary['dataset']}/_stats/")
