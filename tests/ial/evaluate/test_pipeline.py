"""ial.evaluate end to end: protocol, scoring, report files, local and s3://, clear errors.

The model is an untrained tiny ``ial_cms`` (plumbing only); metric correctness is covered with
perfect / mixture / oracle estimates in test_metrics.py. Shards are written here with pyarrow +
``encode_row`` in the featurizer's layout (shard + ``_stats`` completion marker).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from ial.config import ConfigError
from ial.evaluate import EvalConfig, EvaluationError, evaluate, format_table
from ial.evaluate.pipeline import pair_sdri
from ial.evaluate.protocol import ProtocolError, build_mixtures
from ial.separate.waveforms import separate_waveforms
from ial.signal import CLIP_SAMPLES, SAMPLE_RATE, SEGMENT_SAMPLES, log_magnitude
from ial.storage import Storage, read_text, sha256, upload_file, write_bytes, write_text
from preprocessing.shard_schema import SHARD_SCHEMA, encode_row

CLASSES = ("bass", "flute", "violin")
TINY = dict(name="ial_cms", visual_channels=8, embed_dim=16, audio_channels=[4, 8, 8, 16],
            common_hidden=16)


def write_shards(root: str, dataset: str, clips: list[dict]) -> str:
    """A shards dataset ``<root>/shards/<dataset>`` (one shard + its stats marker). clips: dicts
    with clip_id, label, split, audio (L,), frame_features (K, C, H, W)."""
    rows = []
    for c in clips:
        spec = log_magnitude(torch.from_numpy(c["audio"])).numpy()
        rows.append(encode_row(
            clip_id=c["clip_id"], dataset=dataset, label=c["label"], labels=[c["label"]],
            split=c["split"], audio=c["audio"], audio_pad=0, spec=spec, frames=[b"jpeg"] * 2,
            frame_times=[2.5, 7.5], frame_features=c["frame_features"]))
    table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    store = Storage(root)
    shard_url = store.url("shards", dataset, "shard-00000.parquet")
    buf = io.BytesIO()
    pq.write_table(table, buf)
    stats = {"shard": "shard-00000", "dataset": dataset, "rows": len(rows),
             "splits": dict(Counter(c["split"] for c in clips)),
             "classes": dict(Counter(c["label"] for c in clips))}
    write_bytes(shard_url, buf.getvalue())
    write_text(store.url("shards", dataset, "_stats", "shard-00000.json"), json.dumps(stats))
    return store.url("shards", dataset)


def class_clips(classes=CLASSES, per_class: int = 2, channels: int = 8, silent_class: bool = True
                ) -> list[dict]:
    """Test clips of generated instruments (+ a near-silent class), distinct visual features."""
    from ial.demo.corpus import synthesize_audio

    clips = []
    for ci, label in enumerate(classes):
        for k in range(per_class):
            audio = synthesize_audio(label, CLIP_SAMPLES / SAMPLE_RATE, SAMPLE_RATE,
                                     seed=10 * ci + k)
            feats = np.full((2, channels, 2, 2), 0.1 * k, np.float32)
            feats[:, ci % channels] += 1.0
            clips.append({"clip_id": f"{label}{k}_0", "label": label, "split": "test",
                          "audio": audio, "frame_features": feats})
    clips.append({"clip_id": "train0_0", "label": classes[0], "split": "train",
                  "audio": clips[0]["audio"], "frame_features": clips[0]["frame_features"]})
    if silent_class:
        rng = np.random.default_rng(0)
        for k in range(per_class):  # about -75 dBFS: below the -60 dBFS silence threshold
            clips.append({"clip_id": f"quiet{k}_0", "label": "silence", "split": "test",
                          "audio": (rng.standard_normal(CLIP_SAMPLES) * 2e-4).astype(np.float32),
                          "frame_features": np.zeros((2, channels, 2, 2), np.float32)})
    return clips


def export_tiny(url: str, run: str = "tiny", lineage: dict | None = None, **overrides) -> str:
    from ial.models import ModelConfig, build_model
    from ial.models.export import export_model

    torch.manual_seed(0)
    cfg = ModelConfig(**{**TINY, **overrides})
    return export_model(url, build_model(cfg), cfg,
                        lineage={"run": run, "step": 0, **(lineage or {})}, metrics={})


@pytest.fixture(scope="module")
def local_setup(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("evalroot"))
    data = write_shards(root, "toy", class_clips())
    ckpt = export_tiny(os.path.join(root, "checkpoints", "tiny", "model.pt"))
    return root, data, ckpt


def test_protocol_all_class_combinations_deterministic():
    by_class = {"a": ["a1", "a2", "a3"], "b": ["b1", "b2"], "c": ["c1"], "empty": []}
    pairs = build_mixtures(by_class, mix=2, n_per_combination=2, seed=7)
    assert [m.labels for m in pairs] == [("a", "b")] * 2 + [("a", "c")] * 2 + [("b", "c")] * 2
    assert pairs == build_mixtures(by_class, mix=2, n_per_combination=2, seed=7)
    assert len({m.clip_ids for m in pairs[:2]}) == 2  # distinct draws within a combination
    assert [m.index for m in pairs] == list(range(6))
    for m in pairs:
        assert all(cid.startswith(lab) for cid, lab in zip(m.clip_ids, m.labels))
    triplets = build_mixtures(by_class, mix=3, n_per_combination=10, seed=7)
    assert {m.labels for m in triplets} == {("a", "b", "c")}
    assert len(triplets) == 6  # only 3 x 2 x 1 distinct tuples exist: each once
    assert len(build_mixtures(by_class, mix=2, n_per_combination=2, seed=7, max_mixtures=3)) == 3
    with pytest.raises(ProtocolError, match="at least 4 classes"):
        build_mixtures(by_class, mix=4)


def test_pair_sdri_averages_each_class_against_each_other_class():
    def mixture(labels, sdri):
        return {"labels": labels, "scores": {"model": {"sdri": sdri}}}

    mixtures = [mixture(["a", "b"], [1.0, 2.0]), mixture(["b", "a"], [4.0, 3.0]),
                mixture(["a", "c"], [-1.0, 5.0]), mixture(["a", "a"], [9.0, 9.0]),
                {"labels": ["b", "c"], "scores": None}]  # skipped (silent): not counted
    pairs = pair_sdri(mixtures)
    assert pairs["a"]["b"] == {"sdri": 2.0, "n": 2} and pairs["b"]["a"] == {"sdri": 3.0, "n": 2}
    assert pairs["a"]["c"] == {"sdri": -1.0, "n": 1} and pairs["c"] == {"a": {"sdri": 5.0, "n": 1}}
    assert "a" not in pairs["a"]  # a mixture of one class twice pairs it with no other class


def test_evaluate_local_writes_report(local_setup):
    root, data, ckpt = local_setup
    cfg = EvalConfig(checkpoint=ckpt, data=data, mix=2, n_per_combination=2, num_examples=1)
    results = evaluate(cfg, progress=False)

    assert results["report_dir"] == os.path.join(root, "reports", "tiny")  # default out
    # the export records no training window: the authors' 65535 samples
    assert results["protocol"]["window_samples"] == SEGMENT_SAMPLES
    assert list(results["rows"]) == ["model", "oracle_irm", "oracle_ibm", "mixture"]
    counts = results["counts"]
    # 4 classes → 6 pairs × 2 draws; the 3 pairs with the silent class are skipped, counted.
    assert counts["mixtures"] == 12 and counts["skipped_silent"] == 6 and counts["evaluated"] == 6
    assert counts["sources"] == 12 and results["rows"]["model"]["n"] == 12
    assert all("quiet" in " ".join(s["clip_ids"]) for s in results["skipped"])
    rows = results["rows"]
    assert results["sdr"] == rows["model"]["sdr"]
    assert rows["mixture"]["sdri"] == 0.0
    assert rows["oracle_irm"]["sdr"] > rows["mixture"]["sdr"] + 3
    assert rows["oracle_ibm"]["sdr"] > rows["mixture"]["sdr"] + 3
    # the mask measures (ial.evaluate.masks): the mixture keeps everything, the IRM splits it
    assert rows["mixture"]["mask_own"] == pytest.approx(1.0, abs=1e-3)
    assert rows["mixture"]["mask_shared"] == pytest.approx(2.0, abs=1e-3)
    assert rows["oracle_irm"]["mask_own"] > 0.8 and rows["oracle_irm"]["mask_other"] < 0.2
    assert 0.7 < rows["oracle_irm"]["mask_shared"] < 1.3
    assert all(0.0 <= rows["model"][m] <= 2.0 for m in ("mask_own", "mask_other", "mask_shared"))
    assert sorted(results["per_class"]) == sorted(CLASSES)
    assert results["per_class"]["bass"]["model"]["n"] == 4
    # the silent class's mixtures are skipped, so it pairs with no class
    heard = sorted(c for c in CLASSES if results["per_class"].get(c))
    assert sorted(results["per_pair"]) == heard
    assert all(pair["n"] == 2 for others in results["per_pair"].values()
               for pair in others.values())

    out = results["report_dir"]
    for name in ("results.json", "results.csv", "report.html", "per_class_sdr.png",
                 "pair_sdri.png", "config.yaml"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    figures = [f for f in results["files"] if f.startswith("example_")]
    stems = [f for f in results["files"] if f.startswith("stems/")]
    assert len(figures) == 1 and len(stems) == 1 + 2 + 3 * 2  # mixture, refs, model+oracles × 2
    import soundfile as sf

    wave, sr = sf.read(os.path.join(out, stems[0]))
    assert sr == SAMPLE_RATE and wave.shape == (CLIP_SAMPLES,)
    saved = json.loads(read_text(os.path.join(out, "results.json")))
    assert saved["rows"] == results["rows"] and len(saved["mixtures"]) == 12
    assert saved["checkpoint"]["sha256"] == sha256(ckpt)  # which exact file was scored
    with open(os.path.join(out, "results.csv")) as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 6 * 2 * 4  # scored mixtures × sources × rows
    html = open(os.path.join(out, "report.html")).read()
    assert "per_class_sdr.png" in html and figures[0] in html and "<audio" in html
    assert "<th>mask: own</th>" in html
    assert f"sha256 <code>{sha256(ckpt)[:16]}</code>" in html
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temporary files left
    table = format_table(results)
    assert "oracle_irm" in table and "6 of 12" in table and "shared" in table


def test_the_checkpoint_is_applied_with_its_training_window(local_setup, tmp_path, monkeypatch):
    """window null: the window the export was trained on (its lineage's segment_samples; 65535
    when it does not say), recorded in the protocol; an explicit window wins."""
    import ial.evaluate.pipeline as pipeline

    root, data, _ = local_setup
    used = []

    def spy(*args, **kwargs):
        used.append(kwargs["window"])
        return separate_waveforms(*args, **kwargs)

    monkeypatch.setattr(pipeline, "separate_waveforms", spy)
    trained = export_tiny(str(tmp_path / "short" / "model.pt"), run="short",
                          lineage={"configs": {"train": {"segment_samples": 16383}}})
    for window, expected in ((None, 16383), (32767, 32767)):
        used.clear()
        cfg = EvalConfig(checkpoint=trained, data=data, mix=2, n_per_combination=1,
                         num_examples=0, max_mixtures=2, window=window,
                         out=str(tmp_path / f"report-{window}"))
        results = evaluate(cfg, progress=False)
        assert results["protocol"]["window_samples"] == expected and set(used) == {expected}
    with pytest.raises(ConfigError, match="window"):
        EvalConfig(checkpoint=trained, data=data, window=512).validate()


def test_a_killed_evaluation_resumes_with_the_same_scores(local_setup, tmp_path, monkeypatch):
    import ial.evaluate.partial as partial
    import ial.evaluate.pipeline as pipeline

    root, data, ckpt = local_setup
    settings = dict(checkpoint=ckpt, data=data, mix=2, n_per_combination=1, num_examples=1,
                    batch_size=1, oracles=["oracle_irm"])  # 6 mixtures: 6 batches
    whole = evaluate(EvalConfig(**settings, out=str(tmp_path / "whole")), progress=False)
    assert whole["counts"]["resumed"] == 0

    score_batch, calls = pipeline._score_batch, []

    def killed_at_the_fifth_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # what Ctrl-C does; a SIGKILL leaves the same files
        return score_batch(*args, **kwargs)

    monkeypatch.setattr(partial, "FLUSH_SECONDS", 0.0)  # save after every batch
    monkeypatch.setattr(pipeline, "_score_batch", killed_at_the_fifth_batch)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        evaluate(EvalConfig(**settings, out=str(out)), progress=False)
    assert not (out / "results.json").exists()
    (keyed,) = os.listdir(out / ".partial")
    assert len(os.listdir(out / ".partial" / keyed)) == 4  # one file per saved batch here

    calls.clear()
    monkeypatch.setattr(pipeline, "_score_batch",
                        lambda *a, **k: calls.append(1) or score_batch(*a, **k))
    resumed = evaluate(EvalConfig(**settings, out=str(out)), progress=False)
    # Batches 2-4 come from the killed run; batch 1 is separated again for the report's example.
    assert len(calls) == 3 and resumed["counts"]["resumed"] == 3
    assert "3 of the mixtures were scored by an earlier run" in format_table(resumed)
    assert "; 3 scored by an earlier run that was stopped" in (out / "report.html").read_text()
    assert resumed["rows"] == whole["rows"] and resumed["per_class"] == whole["per_class"]
    saved = json.loads(read_text(str(out / "results.json")))
    assert saved["mixtures"] == json.loads(read_text(str(tmp_path / "whole" / "results.json")))[
        "mixtures"]
    assert [f for f in resumed["files"] if f.startswith("example_")]
    assert not (out / ".partial").exists()  # complete: nothing left to resume

    def killed_then(config: EvalConfig) -> dict:
        """Kill a run of the original settings at its fifth batch, then run ``config``."""
        calls.clear()
        monkeypatch.setattr(pipeline, "_score_batch", killed_at_the_fifth_batch)
        with pytest.raises(KeyboardInterrupt):
            evaluate(EvalConfig(**settings, out=str(out)), progress=False)
        calls.clear()
        monkeypatch.setattr(pipeline, "_score_batch",
                            lambda *a, **k: calls.append(1) or score_batch(*a, **k))
        return evaluate(config, progress=False)

    # Another checkpoint never reuses the saved scores, and resume=false ignores them.
    other = export_tiny(str(tmp_path / "other" / "model.pt"), run="other", embed_dim=8)
    for config in (EvalConfig(**{**settings, "checkpoint": other}, out=str(out)),
                   EvalConfig(**settings, out=str(out), resume=False)):
        again = killed_then(config)
        assert len(calls) == 6 and again["counts"]["resumed"] == 0
    assert again["rows"] == whole["rows"] and not (out / ".partial").exists()


def test_evaluate_cli_on_s3(local_setup, s3_root, tmp_path):
    root, data, ckpt = local_setup
    s3_ckpt = s3_root + "/checkpoints/tiny/model.pt"
    upload_file(ckpt, s3_ckpt)
    s3_data = write_shards(s3_root, "toy", class_clips())
    from ial.cli import main

    result = CliRunner().invoke(main, [
        "evaluate", "--checkpoint", s3_ckpt, "--data", s3_data, "--mix", "3", "--n", "1",
        "--no-progress", "--set", "num_examples=1", "--set", "oracles=[oracle_irm_linear]"])
    assert result.exit_code == 0, result.output
    assert "oracle_irm_linear" in result.output
    out = s3_root + "/reports/tiny"
    saved = json.loads(read_text(out + "/results.json"))
    # 4 classes → 4 triplets; only bass+flute+violin has no silent reference.
    assert saved["counts"] == {**saved["counts"], "mixtures": 4, "evaluated": 1,
                               "skipped_silent": 3}
    assert list(saved["rows"]) == ["model", "oracle_irm_linear", "mixture"]
    assert Storage(out).exists("report.html") and Storage(out).exists("results.csv")


def test_clear_errors(local_setup, tmp_path):
    from ial.cli import main

    root, data, ckpt = local_setup

    def run(**kw):
        return evaluate(EvalConfig(**{"checkpoint": ckpt, "data": data, "num_examples": 0,
                                      "n_per_combination": 1, "out": str(tmp_path / "r"), **kw}),
                        progress=False)

    with pytest.raises(EvaluationError, match="no such checkpoint"):
        run(checkpoint=str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    torch.save({"state_dict": {}}, junk)
    with pytest.raises(EvaluationError, match="not an IAL model export"):
        run(checkpoint=str(junk))
    payload = torch.load(ckpt, weights_only=True)
    payload["model_name"] = "no_such_model"
    torch.save(payload, tmp_path / "renamed.pt")
    with pytest.raises(EvaluationError, match="unknown model 'no_such_model'"):
        run(checkpoint=str(tmp_path / "renamed.pt"))
    wide = export_tiny(str(tmp_path / "wide.pt"), visual_channels=16)
    with pytest.raises(EvaluationError,
                       match=r"do not fit model .*reads 16 visual feature channels"):
        run(checkpoint=wide)
    with pytest.raises(EvaluationError, match="no such directory"):
        run(data=os.path.join(root, "shards", "nothing"))
    with pytest.raises(EvaluationError, match="expected a shards dataset dir"):
        run(data=root)
    broken = tmp_path / "bad" / "shards" / "broken"
    (broken / "_stats").mkdir(parents=True)
    pq.write_table(pa.table({"clip_id": ["x"], "split": ["test"]}), broken / "shard-00000.parquet")
    (broken / "_stats" / "shard-00000.json").write_text(
        json.dumps({"shard": "shard-00000", "rows": 1, "splits": {"test": 1}}))
    with pytest.raises(EvaluationError, match=r"shard-00000.parquet.*label"):
        run(data=str(broken))
    from ial.storage import StorageError

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for out, why in ((a_file, "is a file, not a directory"),
                     (a_file / "report", "cannot be created")):  # found before any scoring
        with pytest.raises(StorageError, match=f"^report directory \\(--out\\) {out}: {why}"):
            run(out=str(out))

    result = CliRunner().invoke(main, [
        "evaluate", "--checkpoint", ckpt, "--data", data, "--mix", "5", "--no-progress"])
    assert result.exit_code == 1 and "at least 5 classes" in result.output
    result = CliRunner().invoke(main, [
        "evaluate", "--checkpoint", ckpt, "--data", data, "--set", "oracles=[nope]"])
    assert result.exit_code == 1 and "oracles[0]" in result.output


def test_python_m_help():
    proc = subprocess.run([sys.executable, "-m", "ial.evaluate", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    assert all(word in proc.stdout for word in ("--checkpoint", "--mix", "docs/evaluation.md"))
