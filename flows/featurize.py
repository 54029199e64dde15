"""Prefect flow ``featurize``: plan shards, one Dask task per shard, rebuild the dataset index.

Thin wrapper over ``preprocessing.featurize`` (``run.prepare`` / ``featurize_shard`` /
``run.finish``, as the plain run). The shard tasks run in a subflow ``featurize-shards`` whose
task runner is a ``prefect_dask.DaskTaskRunner``: a LocalCluster of ``n_workers`` processes by
default, or the running scheduler at ``dask_address`` (its workers then need
``PREFECT_API_URL`` of a real Prefect server, see DEPENDENCIES.md). Flow parameters stay small
(the config and the relabeled shard numbers, never the clip lists): the subflow re-reads the
plan, which is deterministic and already written, and takes the relabeled shards from the flow's
plan instead of reading the labels of every complete shard again.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task

from flows.api import dask_task_runner, fail_on_user_error, retry_unless_user_error
from ial.config import load_config
from preprocessing.featurize.config import FeaturizeConfig
from preprocessing.featurize.planning import plan_shards
from preprocessing.featurize.run import finish, local_cluster_kwargs, prepare
from preprocessing.featurize.shard_task import ShardJob, featurize_shard


@task(name="featurize-shard", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_unless_user_error)
def featurize_shard_task(cfg: FeaturizeConfig, job: ShardJob, cfg_hash: str) -> dict:
    """Write one shard (idempotent: a complete shard is skipped)."""
    return featurize_shard(cfg, job, cfg_hash)


def featurize_task_runner(cfg: FeaturizeConfig):
    """DaskTaskRunner on ``cfg.dask_address``, or on the LocalCluster the plain run starts
    (``local_cluster_kwargs``: the same workers and worker settings)."""
    return dask_task_runner(cfg.dask_address, local_cluster_kwargs(cfg))


@flow(name="featurize-shards")
@fail_on_user_error
def featurize_shards_flow(cfg: FeaturizeConfig, stale: list[int]) -> list[dict]:
    """Write every incomplete shard of the plan and the ``stale`` (relabeled) ones, one Dask task
    each; returns their stats."""
    plan = plan_shards(cfg, stale=stale)
    futures = [featurize_shard_task.with_options(name=f"featurize-shard-{job.shard:05d}")
               .submit(cfg, job, plan.config_hash) for job in plan.jobs]
    return [f.result() for f in futures]


@flow(name="featurize")
@fail_on_user_error
def featurize_flow(
    root: str = "./data",
    dataset: str = "vggsound",
    config: str | None = None,
    overrides: list[str] | None = None,
    dask_address: str | None = None,
) -> dict:
    """Featurize the ok clips of ``dataset`` under ``root`` into Parquet shards.

    ``config``: a FeaturizeConfig YAML (configs/featurize/*.yaml); ``overrides``: ``key=value``
    strings; ``root``/``dataset``/``dask_address`` given here win over the file. Returns the
    summary of ``preprocessing.featurize.featurize``.
    """
    logger = get_run_logger()
    start = time.perf_counter()
    cfg = load_config(FeaturizeConfig, config, overrides or [], root=root, dataset=dataset,
                      dask_address=dask_address)
    plan = prepare(cfg, logger)
    logger.info("%d ok clips; %d shards to write (%d of them relabeled since written), %d "
                "complete (skipped)", plan.num_clips, len(plan.jobs), len(plan.stale),
                len(plan.complete))
    results = []
    if plan.jobs:
        results = featurize_shards_flow.with_options(task_runner=featurize_task_runner(cfg))(
            cfg, plan.stale)
    summary = finish(cfg, plan, results, time.perf_counter() - start)
    logger.info("featurize %s: %d shards written, %d skipped, %d rows in the dataset",
                cfg.dataset, summary["shards_written"], summary["shards_skipped"],
                summary["dataset_rows"])
    return summary
