"""Prefect flow ``ingest``: manifest → exact sections (yt-dlp) → clips (ffmpeg) → clip index.

Thin wrapper over ``preprocessing.ingest`` (prepare / run_batch / summarize). The batches run
as tasks (``ingest-batch``, retried on crashes; the clip-level retries of 429/5xx/connection
errors happen inside) in a subflow ``ingest-batches`` whose task runner is a
``prefect_dask.DaskTaskRunner``: a LocalCluster (``dask_workers`` processes ×
``dask_threads`` threads, 1 × 2 by default: sized for 2 cores) or the running scheduler at
``dask_address`` (its workers then need ``PREFECT_API_URL`` of a real Prefect server). Progress
is a Prefect progress artifact (``ingest-<dataset>``) updated as batches finish.

Every parameter is JSON-serialisable (the deployments ``ingest/vggsound``, ``ingest/audioset``,
``ingest/music`` are built on this flow).
"""

from __future__ import annotations

import re
import time

from prefect import flow, get_run_logger, task

from flows.api import dask_task_runner, fail_on_user_error, retry_unless_user_error
from ial.config import load_config
from ial.runtime import local_cluster_kwargs
from preprocessing.ingest.batch import Batch, run_batch
from preprocessing.ingest.config import IngestConfig, redacted_config
from preprocessing.ingest.rate_limit import share
from preprocessing.ingest.run import (check_inputs, check_outcome, ingest_lock, prepare,
                                      summarize)


@task(name="ingest-batch", retries=2, retry_delay_seconds=10,
      retry_condition_fn=retry_unless_user_error)
def ingest_batch_task(cfg: IngestConfig, batch: Batch, previous: dict, rate: float,
                      existing: set[str]) -> dict:
    """One batch: its clips, index part and stats (idempotent: done clips are carried over)."""
    return run_batch(cfg, batch, previous, rate, existing=existing)


def ingest_task_runner(cfg: IngestConfig):
    """DaskTaskRunner on ``cfg.dask_address``, or on a LocalCluster of ``dask_workers`` processes
    × ``dask_threads`` threads."""
    return dask_task_runner(cfg.dask_address,
                            local_cluster_kwargs(cfg.dask_workers, cfg.dask_threads))


def _parallel_slots(cfg: IngestConfig, n_batches: int) -> int:
    """How many batches can run at once (to split the global rate limit between them)."""
    slots = cfg.dask_workers * cfg.dask_threads
    if cfg.dask_address:
        try:
            from distributed import Client

            with Client(cfg.dask_address, timeout=10) as client:
                slots = sum(client.nthreads().values()) or slots
        except Exception:  # pragma: no cover - the task runner will report a bad address
            pass
    return max(1, min(n_batches, slots))


@flow(name="ingest-batches")
@fail_on_user_error
def ingest_batches_flow(cfg: IngestConfig) -> dict:
    """Plan the batches, run them as Dask tasks (holding the dataset's ``ingest_lock``),
    return the summary."""
    inputs = check_inputs(cfg)  # a root that cannot hold the lock is said as a root
    with ingest_lock(cfg.root, cfg.dataset_name):
        return _run_batches(cfg, inputs)


def _run_batches(cfg: IngestConfig, inputs) -> dict:
    from prefect.artifacts import create_progress_artifact, update_progress_artifact
    from prefect.futures import as_completed

    logger = get_run_logger()
    started = time.time()
    plan = prepare(cfg, inputs)
    logger.info("%d manifest entries (%d duplicates, %d malformed skipped) → %d batches",
                plan.entries, plan.duplicates, len(plan.skipped), len(plan.batches))
    key = "ingest-" + re.sub(r"[^a-z0-9-]+", "-", cfg.dataset_name.lower()).strip("-")
    artifact = create_progress_artifact(0.0, key=key,
                                        description=f"ingest {cfg.dataset_name}: batches done")
    rate = share(cfg.rate_limit_per_minute, _parallel_slots(cfg, len(plan.batches)))
    futures = [ingest_batch_task.with_options(name=f"ingest-batch-{b.batch_id}")
               .submit(cfg, b, plan.previous[b.batch_id], rate, plan.existing[b.batch_id])
               for b in plan.batches]
    stats = []
    for fut in as_completed(futures):
        s = fut.result()
        stats.append(s)
        logger.info("batch %s: %s", s["batch"], s["by_status"])
        update_progress_artifact(artifact, 100.0 * len(stats) / max(1, len(futures)))
    stats.sort(key=lambda s: s["batch"])
    return summarize(plan, stats, time.time() - started)


@flow(name="ingest")
@fail_on_user_error
def ingest_flow(
    manifest: str,
    manifest_format: str = "vggsound",
    root: str = "./data",
    dataset: str | None = None,
    config: str | None = None,
    overrides: list[str] | None = None,
    dask_address: str | None = None,
    retry_failed: bool = False,
) -> dict:
    """Ingest ``manifest`` into ``<root>/clips/<dataset>/``.

    ``config``: an IngestConfig YAML (configs/ingest/*.yaml); ``overrides``: ``key=value``
    strings (win over everything); the other arguments win over the file. Returns the summary
    of ``preprocessing.ingest`` (counts by status and reason, clips/s, ...).
    """
    logger = get_run_logger()
    values = dict(manifest=manifest, manifest_format=manifest_format, root=root,
                  dataset=dataset, dask_address=dask_address)
    if retry_failed:
        values["retry_failed"] = True
    cfg = load_config(IngestConfig, config, overrides or [], **values)
    logger.info("ingest config: %s", redacted_config(cfg))
    summary = ingest_batches_flow.with_options(task_runner=ingest_task_runner(cfg))(cfg)
    logger.info("ingest %s: %s (%s)", cfg.dataset_name, summary["by_status"],
                summary["by_reason"])
    return check_outcome(summary)
