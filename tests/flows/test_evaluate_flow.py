"""The Prefect ``evaluate`` flow: runs ial.evaluate, returns its summary, publishes the table."""

from __future__ import annotations

import os

from tests.ial.evaluate.test_pipeline import class_clips, export_tiny, write_shards


def test_evaluate_flow(prefect_harness, tmp_path):
    from prefect.artifacts import Artifact

    from flows.evaluate import evaluate_flow

    root = str(tmp_path)
    data = write_shards(root, "toy", class_clips(silent_class=False))
    ckpt = export_tiny(os.path.join(root, "checkpoints", "flowrun", "model.pt"), run="flowrun")
    config = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "eval", "demo.yaml")
    results = evaluate_flow(checkpoint=ckpt, data=data, mix=2, config=config,
                            overrides=["n_per_combination=1", "num_examples=0"])
    assert results["counts"]["mixtures"] == 3 and results["counts"]["evaluated"] == 3
    assert results["sdr"] == results["rows"]["model"]["sdr"]
    assert results["rows"]["oracle_irm"]["sdr"] > results["rows"]["mixture"]["sdr"]
    assert results["report_dir"] == os.path.join(root, "reports", "flowrun")
    assert os.path.exists(os.path.join(results["report_dir"], "results.json"))
    artifact = Artifact.get("evaluation")
    assert artifact is not None and "oracle_irm" in artifact.data
