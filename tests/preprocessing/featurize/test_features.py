"""Featurization on a local root: per-clip features, shards, corrupt clips, resume, index."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ial.signal import CLIP_SAMPLES, LOG_BINS, log_bin_frequency, num_frames
from ial.storage import Storage
from preprocessing.clip_index import write_clip_index_part
from preprocessing.featurize.config import FeaturizeConfig, config_hash
from preprocessing.featurize.features import featurize_clip
from preprocessing.featurize.planning import plan_shards
from preprocessing.featurize.shard_task import relabel_shard
from preprocessing.featurize.run import featurize
from preprocessing.shard_schema import decode_row, shard_metadata
from preprocessing.shards import (iter_shard_rows, list_shards, read_dataset_index, read_shard,
                                  read_shard_metadata, shard_url, stats_url)
from tests.preprocessing.featurize.clip_roots import (  # noqa: F401 - source_videos: a fixture
    FRAME_SIZE, index_row, make_clip_root, small_config, source_videos,
)

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def dask_client():
    """One LocalCluster (2 worker processes) shared by this module's runs."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def expected_bin(freq_hz: float) -> float:
    """Fractional log bin whose centre frequency is ``freq_hz`` (inverse of log_bin_frequency)."""
    lin_bin = freq_hz * 1022 / 11025
    return math.log(1 + 20 * lin_bin / 511) / math.log(21) * (LOG_BINS - 1)


def test_featurize_clip_shapes_and_tone_peak(source_videos):
    cfg = small_config(".")
    for hz in (440, 880):
        out = featurize_clip(source_videos["good"][hz], cfg)
        assert out["audio"].shape == (CLIP_SAMPLES,) and out["audio"].dtype == np.float32
        assert abs(out["audio_pad"]) < 2048  # AAC priming/padding only
        assert out["spec"].shape == (LOG_BINS, num_frames(CLIP_SAMPLES))
        assert len(out["frames"]) == 3 and all(f[:2] == b"\xff\xd8" for f in out["frames"])
        assert out["frame_times"] == [2.5, 5.0, 7.5]
        assert out["frame_features"].shape == (3, 512, FRAME_SIZE // 16, FRAME_SIZE // 16)
        peak = int(np.argmax(out["spec"][:, 20:-20].mean(axis=1)))
        assert abs(peak - expected_bin(hz)) <= 1.0, (hz, peak, expected_bin(hz))
        assert abs(log_bin_frequency(peak) - hz) / hz < 0.05


def test_frames_differ_over_time_and_features_deterministic(source_videos):
    cfg = small_config(".")
    a = featurize_clip(source_videos["good"][440], cfg)
    b = featurize_clip(source_videos["good"][440], cfg)
    assert a["frames"] == b["frames"]
    np.testing.assert_array_equal(a["frame_features"], b["frame_features"])
    assert len(set(a["frames"])) == 3  # testsrc moves: the three times give three pictures


def test_featurize_local_corrupt_resume_and_index(tmp_path, source_videos, dask_client):
    labels = make_clip_root(str(tmp_path), source_videos, n_good=5)
    cfg = small_config(tmp_path)
    summary = featurize(cfg, client=dask_client, progress=False)
    root = Storage(tmp_path)
    # 6 ok clips (5 good + 1 corrupt) in shards of 3 → 2 shards; the corrupt clip is recorded
    assert summary["shards_written"] == 2 and summary["rows_written"] == 5
    assert [f["clip_id"] for f in summary["failures"]] == ["bad_0"]
    assert "visual_weights_warning" in summary
    urls = list_shards(root, "toy")
    assert urls == [shard_url(root, "toy", 0), shard_url(root, "toy", 1)]
    seen = []
    for url in urls:
        table = read_shard(url)
        meta = shard_metadata(table)
        assert meta["visual_weights"] == "none (random init)"
        assert meta["config_hash"] == config_hash(cfg) and meta["featurizer_version"]
        assert "RANDOMLY INITIALISED" in meta["visual_weights_warning"]
        assert pq.ParquetFile(url).num_row_groups == math.ceil(table.num_rows / 2)
        for row in iter_shard_rows(url):
            clip = decode_row(row)
            seen.append(clip.clip_id)
            assert clip.label == labels[clip.clip_id]
            assert clip.audio.shape == (CLIP_SAMPLES,) and clip.spec.shape[0] == LOG_BINS
            assert clip.frame_features.shape == (3, 512, 4, 4)
    assert sorted(seen) == sorted(labels)
    with open(root.url("shards", "toy", "_stats", "shard-00000.json")) as f:
        stats = json.load(f)
    assert stats["failed"][0]["clip_id"] == "bad_0" and stats["failed"][0]["reason"]
    assert stats["visual_weights"] == "none (random init)"
    index = read_dataset_index(root, "toy")
    assert index["rows"] == 5 and index["num_shards"] == 2 and index["failed"] == 1
    assert index["splits"] == {"train": 3, "val": 2}
    assert index["classes"] == {"tone440": 3, "tone880": 2}
    assert list_shards(root, "toy", split="val") == urls  # vid000 in shard 0, vid003 in shard 1
    assert list_shards(root, "toy", split="test") == []
    assert os.path.exists(root.url("shards", "toy", "config.yaml"))

    # re-running does no work: nothing rewritten
    mtimes = {u: os.path.getmtime(u) for u in urls}
    again = featurize(cfg, client=dask_client, progress=False)
    assert again["shards_written"] == 0 and again["shards_skipped"] == 2
    assert {u: os.path.getmtime(u) for u in urls} == mtimes
    assert plan_shards(cfg).jobs == []

    # new clips go to new shards; old assignments stay
    more = make_clip_root(str(tmp_path), source_videos, n_good=7, corrupt=False)
    third = featurize(cfg, client=dask_client, progress=False)
    assert third["shards_written"] == 1 and third["rows_written"] == 2
    assert {u: os.path.getmtime(u) for u in urls} == mtimes
    assert read_dataset_index(root, "toy")["rows"] == len(more)


def featurized_five_clips(tmp_path, source_videos, client):
    """Five good clips featurized into two shards (vid000-002 | vid003-004). Returns (config,
    root, the shard URLs, their mtimes)."""
    make_clip_root(str(tmp_path), source_videos, n_good=5, corrupt=False)
    cfg = small_config(tmp_path)
    featurize(cfg, client=client, progress=False)
    root = Storage(tmp_path)
    urls = list_shards(root, "toy")
    return cfg, root, urls, {u: os.path.getmtime(u) for u in urls}


def reingest_five_clips(root, split=lambda i: "train" if i % 3 else "val", status=lambda i: "ok"):
    """The ingest batch's new version of the five clips' index rows: those of ``make_clip_root``,
    with clip i's ``split(i)`` and ``status(i)``."""
    rows = [index_row(f"vid{i:03d}_{1000 * i}",
                      root.url("clips", "toy", f"vid{i:03d}_{1000 * i}.mp4"),
                      f"tone{440 if i % 2 == 0 else 880}", split(i), status=status(i))
            for i in range(5)]
    write_clip_index_part(root, "toy", "b0", rows)


def test_a_relabeled_clip_has_its_shard_written_again(tmp_path, source_videos, dask_client,
                                                      monkeypatch):
    """Re-ingesting an edited manifest changes a clip's split in the clip index: the complete
    shard holding it is written again (training reads the split from the shards), the others
    are left alone."""
    cfg, root, urls, mtimes = featurized_five_clips(tmp_path, source_videos, dask_client)
    reingest_five_clips(root, split=lambda i: "test" if i == 4 else ("train" if i % 3 else "val"))
    plan = plan_shards(cfg)
    assert plan.stale == [1] and plan.complete == [0] and [j.shard for j in plan.jobs] == [1]
    with monkeypatch.context() as m:  # the flow's subflow: given the stale shards, reads none
        m.setattr("preprocessing.featurize.planning.iter_shard_rows", None)
        again = plan_shards(cfg, stale=plan.stale)
    assert again.stale == [1] and [j.rewrite for j in again.jobs] == [True]
    features = ["clip_id", "audio", "spec", "frames", "frame_features"]
    stored = list(iter_shard_rows(urls[1], features))
    with monkeypatch.context() as m:  # killed while writing its stats: the labels stay stale
        m.setattr("preprocessing.featurize.shard_task.write_text",
                  lambda *a: (_ for _ in ()).throw(KeyboardInterrupt("killed")))
        with pytest.raises(KeyboardInterrupt):
            relabel_shard(cfg, plan.jobs[0])
    assert plan_shards(cfg).stale == [1]  # not committed: found relabeled again, and mended
    summary = featurize(cfg, client=dask_client, progress=False)
    assert summary["shards_written"] == 1 and summary["splits"] == {"train": 2, "val": 2,
                                                                     "test": 1}
    assert os.path.getmtime(urls[0]) == mtimes[urls[0]]
    assert {r["clip_id"]: r["split"] for r in iter_shard_rows(urls[1], ["clip_id", "split"])} \
        == {"vid003_3000": "val", "vid004_4000": "test"}
    assert list(iter_shard_rows(urls[1], features)) == stored  # relabeled, features kept
    stats = json.loads(Path(stats_url(root, "toy", 1)).read_text())
    assert stats["relabeled"] == 1 and stats["splits"] == {"val": 1, "test": 1}
    assert read_shard_metadata(urls[1])["config_hash"] == plan.config_hash
    assert plan_shards(cfg).jobs == []  # written once: current now


def test_a_clip_no_longer_ok_is_dropped_from_its_complete_shard(tmp_path, source_videos,
                                                               dask_client):
    """A re-ingest marks a featurized clip unavailable: its complete shard is written again
    without it (features of the others kept, the clip recorded as failed with the reason);
    training no longer reads it. The other shard is left alone."""
    cfg, root, urls, mtimes = featurized_five_clips(tmp_path, source_videos, dask_client)
    features = ["clip_id", "audio", "spec", "frames", "frame_features"]
    kept = [r for r in iter_shard_rows(urls[0], features) if r["clip_id"] != "vid001_1000"]
    reingest_five_clips(root, status=lambda i: "unavailable" if i == 1 else "ok")
    plan = plan_shards(cfg)
    assert plan.stale == [0] and [(j.shard, j.missing) for j in plan.jobs] == [(0, ["vid001_1000"])]
    summary = featurize(cfg, client=dask_client, progress=False)
    assert summary["shards_written"] == 1
    assert os.path.getmtime(urls[1]) == mtimes[urls[1]]
    assert list(iter_shard_rows(urls[0], features)) == kept
    stats = json.loads(Path(stats_url(root, "toy", 0)).read_text())
    assert stats["rows"] == 2 and stats["splits"] == {"val": 1, "train": 1}
    assert [(f["clip_id"], f["reason"]) for f in stats["failed"]] == \
        [("vid001_1000", "no longer status ok in the clip index")]
    index = read_dataset_index(root, "toy")
    assert index["rows"] == 4 and index["failed"] == 1
    assert plan_shards(cfg).jobs == []  # written once: current now


def test_a_shard_records_random_weights_without_warning_again(tmp_path, source_videos, caplog):
    """The run warns once about random visual weights; each shard task records it in its stats
    and logs it at INFO only (9 shards used to print 9 more warnings from the workers)."""
    from preprocessing.featurize.shard_task import featurize_shard

    make_clip_root(str(tmp_path), source_videos, n_good=2, corrupt=False)
    cfg = small_config(tmp_path)
    plan = plan_shards(cfg)
    with caplog.at_level(logging.INFO, logger="ial.featurize"):
        stats = featurize_shard(cfg, plan.jobs[0], plan.config_hash)
    assert stats["rows"] == 2 and "RANDOMLY INITIALISED" in stats["visual_weights_warning"]
    said = [r for r in caplog.records if "RANDOMLY INITIALISED" in r.getMessage()]
    assert said and all(r.levelno == logging.INFO for r in said)


def test_config_mismatch_refused(tmp_path, source_videos, dask_client):
    make_clip_root(str(tmp_path), source_videos, n_good=1, corrupt=False)
    featurize(small_config(tmp_path), client=dask_client, progress=False)
    from preprocessing.featurize.planning import FeaturizeMismatchError

    with pytest.raises(FeaturizeMismatchError, match="config hash"):
        plan_shards(small_config(tmp_path, jpeg_quality=50))
    # `ial featurize` (Prefect, the default) says it in one line before any flow run starts
    from click.testing import CliRunner

    from ial.cli import main

    result = CliRunner().invoke(main, ["featurize", "--root", str(tmp_path), "--dataset", "toy",
                                       "--set", f"frame_size={FRAME_SIZE}", "--set",
                                       "jpeg_quality=50"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and "holds shards made with" in lines[-1], lines
    assert "Traceback" not in result.output and "Flow run" not in result.output, lines


def test_cli_featurize_no_prefect(tmp_path, source_videos, caplog):
    """The CLI's plain run creates its own LocalCluster (the default path)."""
    from click.testing import CliRunner

    from ial.cli import main

    make_clip_root(str(tmp_path), source_videos, n_good=2, corrupt=False)
    missing = index_row("missing_0", str(tmp_path / "no-such-clip.mp4"), "tone440", "train")
    write_clip_index_part(Storage(tmp_path), "toy", "b1", [missing])
    help_text = CliRunner().invoke(main, ["featurize", "--help"]).output
    assert "--visual-weights" in help_text and "--dask-address" in help_text
    args = ["featurize", "--root", str(tmp_path), "--dataset", "toy", "--no-prefect",
            "--no-progress", "--n-workers", "1", "--set", "frame_size=32"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["rows_written"] == 2 and summary["visual_weights"] == ["none (random init)"]
    assert [(f["clip_id"], f["reason"].split(":")[0]) for f in summary["failures"]] == \
        [("missing_0", "FileNotFoundError")]
    # said once, by the run after its input check (without handlers: Python's stderr fallback)
    said = [r for r in caplog.records if "RANDOMLY INITIALISED" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    assert "RANDOMLY INITIALISED" not in result.stderr  # not a second time by the CLI
    bad = CliRunner().invoke(main, args[:-1] + ["frame_size=33"])
    assert bad.exit_code != 0 and "frame_size" in bad.output
    weights = CliRunner().invoke(main, args + ["--visual-weights", str(tmp_path / "none.pth")])
    assert weights.exit_code == 1 and "visual_weights" in weights.output
    assert "none.pth" in weights.output
    (tmp_path / "junk.pth").write_text("<html>404</html>")  # no weights: said before any worker
    weights = CliRunner().invoke(main, args + ["--visual-weights", str(tmp_path / "junk.pth")])
    assert weights.exit_code == 1 and "Traceback" not in weights.output, weights.output
    assert weights.output.strip().splitlines()[-1].startswith(
        f"Error: config field 'visual_weights': {tmp_path / 'junk.pth'}: not a torchvision")


def test_local_cluster_workers_get_the_featurize_settings():
    """The LocalCluster featurize starts passes LOCAL_WORKER_CONFIG (profiler off, ...) and the
    thread limits on to its worker processes."""
    import dask

    from ial.runtime import LOCAL_WORKER_CONFIG
    from preprocessing.featurize.run import dask_client

    def settings():
        return ({k: dask.config.get(k) for k in LOCAL_WORKER_CONFIG},
                os.environ.get("OMP_NUM_THREADS"))

    with dask_client(FeaturizeConfig(n_workers=1, torch_threads=1)) as client:
        (got,) = client.run(settings).values()
    assert got == (LOCAL_WORKER_CONFIG, "1")
    assert dask.config.get("distributed.worker.profile.enabled")  # this process: untouched


def test_concurrent_callers_share_one_optimized_trunk():
    """Several threads asking at once (two shard tasks in one worker, client.run beside a task)
    get one trunk, built once."""
    from concurrent.futures import ThreadPoolExecutor

    from ial.models.resnet18 import InferenceTrunk
    from preprocessing.featurize.config import FeaturizeConfig
    from preprocessing.featurize.features import load_backbone

    cfg = FeaturizeConfig(seed=12345)  # a key no other test built
    with ThreadPoolExecutor(4) as pool:
        trunks = [t for t, _ in pool.map(lambda _: load_backbone(cfg), range(4))]
    assert all(t is trunks[0] for t in trunks)
    assert isinstance(trunks[0], InferenceTrunk)


def test_keep_tensor_memory_sets_glibc_thresholds_in_a_dask_like_process(tmp_path):
    """Under Dask's MALLOC_TRIM_THRESHOLD_=65536 a 64 MiB tensor freed and allocated again is
    mmap'd and faulted in every time; after keep_tensor_memory the pages are reused."""
    code = (
        "import resource, torch\n"
        "from preprocessing.featurize.features import keep_tensor_memory\n"
        "def faults():\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    for _ in range(20):\n"
        "        torch.empty(4 << 20).fill_(1.0)\n"  # 16 MiB, above the 128 KiB default
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "plain = faults()\n"
        "assert keep_tensor_memory()\n"
        "faults()\n"
        "kept = faults()\n"
        "print(plain, kept)\n")
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=str(REPO), timeout=120)
    assert proc.returncode == 0, proc.stderr
    plain, kept = map(int, proc.stdout.split())
    assert plain > 20 * 4000 and kept < plain / 10, (plain, kept)  # 16 MiB = 4096 pages


def test_a_run_where_every_clip_fails_to_decode_is_an_error(tmp_path, source_videos, dask_client):
    from preprocessing.featurize.run import NothingFeaturized

    (tmp_path / "clips" / "toy").mkdir(parents=True)
    make_clip_root(str(tmp_path), source_videos, n_good=0, corrupt=True)  # only the corrupt one
    with pytest.raises(NothingFeaturized, match=r"all 1 clips of 'toy' failed to decode "
                                                r"\(first: bad_0: "):
        featurize(small_config(tmp_path), client=dask_client, progress=False)


def test_low_level_features_pack_layer2_for_the_authors_head(source_videos):
    from preprocessing.featurize.config import config_hash, content_dict

    plain = small_config("/tmp/unused")
    assert "low_level_features" not in content_dict(plain)  # shards made before keep their hash
    both = small_config("/tmp/unused", low_level_features=True)
    assert config_hash(both) != config_hash(plain)
    path = source_videos["good"][440]
    deep = featurize_clip(path, plain)["frame_features"]
    packed = featurize_clip(path, both)["frame_features"]
    K, C, h, w = deep.shape
    assert packed.shape == (K, C + 128 * 4, h, w)  # + layer 2 (128 ch, 2h×2w) space-to-depth
    assert np.allclose(packed[:, :C], deep, atol=1e-4)
