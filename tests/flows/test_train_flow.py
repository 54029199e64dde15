"""Prefect flow ``train``: launches the job, records the checkpoint, warm-starts (resume_from)."""

from __future__ import annotations

import os

import pytest
import torch
import yaml

from ial.data.synthetic import write_synthetic_shards as write_shards
from tests.conftest import DISTRIBUTED_ENV
from tests.ial.training.test_trainer import SPLITS, TINY_METHOD, TINY_MODEL

pytestmark = pytest.mark.slow


def test_train_flow_records_the_checkpoint_and_warm_starts(tmp_path, prefect_harness, monkeypatch):
    from prefect.artifacts import Artifact

    from flows.train import train_flow

    for key in DISTRIBUTED_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    root = str(tmp_path / "root")
    write_shards(root, shards=1, rows=12, samples=6000, splits=SPLITS)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "model": TINY_MODEL, "method": TINY_METHOD, "batch_size": 4, "steps": 2,
        "segment_samples": 4095, "val_every": 2, "val_mixtures": 2, "checkpoint_every": 2,
        "num_workers": 0, "run_name": "from-yaml"}))

    first = train_flow(root=root, dataset="toy", config=str(config), overrides=["run_name=first"])
    assert first["run"] == "first" and first["step"] == 2
    assert first["checkpoint"] == f"{root}/checkpoints/first/model.pt"
    assert os.path.exists(first["checkpoint"])
    link = Artifact.get("train-checkpoint")
    assert link is not None and first["checkpoint"] in link.data
    assert "first" in Artifact.get("train-summary").data

    second = train_flow(root=root, dataset="toy", config=str(config), overrides=["run_name=second"],
                        resume_from=first["checkpoint"])
    meta = torch.load(second["checkpoint"], weights_only=True)
    assert meta["lineage"]["init_from"] == first["checkpoint"]
    assert not os.listdir(tmp_path / "ext") if os.path.exists(tmp_path / "ext") else True
