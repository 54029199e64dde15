"""The nightly retraining flow on small local data, through the real stage flows.

Night 1: no champion → train from scratch, evaluate, promote.
Night 2 (nothing new): ingest downloads nothing, no training, no evaluation, no new decision.
Night 3 (new manifest entries, a margin no challenger can meet): ingest only the new entries,
resume from the champion, evaluate both, keep the champion; both scores recorded.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ial.nightly.promotion import list_promotions, read_champion

CLASSES = ["violin", "flute"]


def write_manifest(src: str, dst: Path, drop: set[str]) -> None:
    with open(src, newline="") as f:
        rows = [r for r in csv.reader(f) if r and r[0] not in drop]
    with open(dst, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def tiny_nightly_config(path: Path, root: Path, url_template: str, dask_address: str) -> Path:
    """A nightly config: the demo stage configs, made as small as the stages allow."""
    repo = Path(__file__).resolve().parents[2]
    cfg = {
        "root": str(root), "dataset": "nightly", "manifest": str(root / "manifest.csv"),
        "manifest_format": "vggsound",
        "ingest_config": str(repo / "configs/ingest/demo.yaml"),
        "ingest_overrides": [f"url_template={url_template}", "dask_workers=1"],
        "featurize_config": str(repo / "configs/featurize/demo.yaml"),
        "featurize_overrides": ["n_workers=1", "clips_per_shard=4"],
        "train_config": str(repo / "configs/train/demo.yaml"),
        "train_overrides": ["steps=2", "val_every=2", "checkpoint_every=2", "val_mixtures=1",
                            "batch_size=2", "num_workers=0", "log_every=1", "method.lambda_av=0"],
        "eval_config": str(repo / "configs/eval/demo.yaml"),
        "eval_overrides": ["n_per_combination=1", "num_examples=0", "oracles=[]"],
        "dask_address": dask_address,
    }
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from ial.demo.corpus import generate_corpus

    return generate_corpus(str(tmp_path_factory.mktemp("corpus")), classes=CLASSES,
                           videos_per_class=4, seconds=13.0, seed=3, workers=2)


@pytest.fixture
def dask_cluster(prefect_harness):
    """One Dask cluster for every ingest/featurize of the test (started once, not per stage)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_nightly_promotes_then_skips_then_keeps(prefect_harness, dask_cluster, corpus, tmp_path):
    from flows.retrain import retrain_flow
    from ial.demo.video_server import VideoServer

    root = tmp_path / "root"
    root.mkdir()
    train_ids = {label: [e.video_id for e in corpus.by_label(label) if e.split == "train"]
                 for label in CLASSES}
    # one train video per class, added on night 3
    held_back = {ids[-1] for ids in train_ids.values()}
    write_manifest(corpus.manifest, root / "manifest.csv", drop=held_back)

    with VideoServer(corpus.out_dir) as server:
        config = tiny_nightly_config(tmp_path / "nightly.yaml", root, server.url_template,
                                     dask_cluster)

        # Night 1: no champion → promote.
        night1 = retrain_flow(config=str(config))
        assert night1["decision"] == "promote", night1.get("reason")
        champion = read_champion(str(root))
        assert champion["checkpoint"] == night1["challenger"]
        assert night1["challenger"].endswith("/best/model.pt")  # the run's best on validation
        assert champion["sdr"] == night1["challenger_sdr"]
        assert night1["resumed_from"].startswith("scratch")
        assert "| decision | promote |" in night1["markdown"]
        assert Path(night1["summary_url"]).read_text() == night1["markdown"]
        # the export says how its shards were made (what `ial separate` featurizes new videos by)
        from ial.models.export import read_export
        from preprocessing.shards import read_shard_metadata

        lineage = read_export(night1["challenger"])["lineage"]
        shard_meta = read_shard_metadata(lineage["shards"][0])
        assert lineage["featurize"]["config_hash"] == shard_meta["config_hash"] is not None
        assert lineage["featurize_config"]["frame_size"] == shard_meta["config"]["frame_size"]

        # Night 1 again, as after a crash before its decision was recorded: the same run (named
        # by its data, champion and config), resumed where it ended: not trained again
        import shutil

        runs = sorted(p.name for p in (root / "checkpoints").iterdir())
        (root / "champion.json").unlink()
        shutil.rmtree(root / "promotions")
        again = retrain_flow(config=str(config))
        assert again["challenger"] == night1["challenger"] and again["decision"] == "promote"
        assert sorted(p.name for p in (root / "checkpoints").iterdir()) == runs
        assert again["run"] == night1["run"] and night1["train_resumed_from_step"] is None
        assert again["train_resumed_from_step"] == 2  # its last step: nothing trained again
        assert f"| training run | {night1['run']} (run again: resumed at step 2) |" in again[
            "markdown"]

        # Night 2: the same manifest → nothing downloaded, nothing trained, nothing decided;
        # and an ingest of the dataset that is running (a backfill) is left to it.
        from preprocessing.ingest.run import ingest_lock

        gets_before = sum(1 for r in server.requests if r[0] == "GET")
        runs_before = sorted(p.name for p in (root / "checkpoints").iterdir())
        with ingest_lock(str(root), night1["dataset"]):
            night2 = retrain_flow(config=str(config))
        assert night2["decision"] == "skipped"
        assert {"train", "evaluate", "promote"} <= set(night2["skipped"])
        assert night2["skipped"][0].startswith(f"ingest (dataset '{night1['dataset']}' is being "
                                               f"ingested already (pid ")
        assert "ingest" not in night2 and "the night uses the clips indexed so far" in night2[
            "markdown"]
        assert sum(1 for r in server.requests if r[0] == "GET") == gets_before
        assert sorted(p.name for p in (root / "checkpoints").iterdir()) == runs_before
        assert len(list_promotions(str(root))) == 1
        assert night2["train_fingerprint"] == night1["train_fingerprint"]

        # Night 3: new entries; a margin no challenger meets → keep, both scores recorded.
        write_manifest(corpus.manifest, root / "manifest.csv", drop=set())
        requested_before = {r[1] for r in server.requests}
        night3 = retrain_flow(config=str(config), overrides=["min_improvement=1000"])
        new_paths = {r[1] for r in server.requests} - requested_before
        assert new_paths and all(any(v in p for v in held_back) for p in new_paths)
        assert night3["decision"] == "keep"
        assert night3["resumed_from"] == champion["checkpoint"]
        assert night3["train_fingerprint"] != night1["train_fingerprint"]
        records = list_promotions(str(root))
        assert [r["decision"] for r in records] == ["promote", "keep"]
        assert records[1]["challenger"] == night3["challenger"] != champion["checkpoint"]
        assert isinstance(records[1]["champion_sdr"], float)
        assert isinstance(records[1]["challenger_sdr"], float)
        # the gain source by source on the same mixtures, with its paired 95 % interval
        mean, lo, hi = night3["gain_ci"]
        assert lo <= mean <= hi and records[1]["gain_ci"] == [mean, lo, hi]
        assert mean == pytest.approx(night3["challenger_sdr"] - night3["champion_sdr"], abs=1e-6)
        assert "| gain, 95 % paired CI (dB) |" in night3["markdown"]
        assert read_champion(str(root))["checkpoint"] == champion["checkpoint"]
