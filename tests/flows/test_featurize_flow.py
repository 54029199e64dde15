"""The Prefect flow ``featurize`` (Dask task runner, LocalCluster) on a local root."""

from __future__ import annotations

import pytest

from ial.storage import Storage
from preprocessing.clip_index import read_clip_index, write_clip_index_part
from preprocessing.shards import list_shards, read_dataset_index
from tests.preprocessing.featurize.clip_roots import make_clip_root, source_videos  # noqa: F401

pytestmark = pytest.mark.slow


def test_featurize_flow_dask_runner(tmp_path, source_videos, prefect_harness):  # noqa: F811
    from flows.featurize import featurize_flow

    labels = make_clip_root(str(tmp_path), source_videos, n_good=3)
    overrides = ["clips_per_shard=2", "frame_size=32", "n_workers=2", "batch_clips=2"]
    summary = featurize_flow(root=str(tmp_path), dataset="toy", config=None, overrides=overrides)
    # 4 ok clips (one corrupt) in shards of 2
    assert summary["shards_written"] == 2 and summary["rows_written"] == 3
    assert [f["clip_id"] for f in summary["failures"]] == ["bad_0"]
    assert summary["visual_weights"] == ["none (random init)"]
    root = Storage(tmp_path)
    assert len(list_shards(root, "toy")) == 2
    assert read_dataset_index(root, "toy")["rows"] == len(labels)
    again = featurize_flow(root=str(tmp_path), dataset="toy", overrides=overrides)
    assert again["shards_written"] == 0 and again["shards_skipped"] == 2
    rows = read_clip_index(root, "toy").to_pylist()  # a re-ingest moves vid000 from val to test
    for row in rows:
        row["split"] = "test" if row["clip_id"] == "vid000_0" else row["split"]
    write_clip_index_part(root, "toy", "b0", rows)
    relabeled = featurize_flow(root=str(tmp_path), dataset="toy", overrides=overrides)
    assert relabeled["shards_written"] == 1 and relabeled["shards_skipped"] == 1
    assert relabeled["splits"]["test"] == 1


def test_featurize_flow_starts_the_cluster_of_the_plain_run():
    """The flow's LocalCluster gets the plain run's workers and worker settings
    (``LOCAL_WORKER_CONFIG``: profiler off, ...), not a copy of its own."""
    from flows.featurize import featurize_task_runner
    from ial.runtime import LOCAL_WORKER_CONFIG
    from preprocessing.featurize.config import FeaturizeConfig
    from preprocessing.featurize.run import local_cluster_kwargs

    cfg = FeaturizeConfig(n_workers=1, torch_threads=1)
    runner = featurize_task_runner(cfg)
    assert runner.cluster_kwargs == local_cluster_kwargs(cfg)
    assert runner.cluster_kwargs["config"]["distributed"]["worker"]["profile"]["enabled"] is False
    assert LOCAL_WORKER_CONFIG["distributed.worker.profile.enabled"] is False
