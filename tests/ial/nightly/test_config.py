"""RetrainConfig: stage config paths resolved from the source tree, bad fields named."""

from __future__ import annotations

from pathlib import Path

import pytest

from ial.errors import ConfigError
from ial.nightly.config import challenger_run_name, load_retrain_config


def test_nightly_config_resolves_stage_configs_and_names_bad_fields(tmp_path):
    cfg = load_retrain_config("configs/retrain/nightly.yaml", ["min_improvement=0.25"],
                              root=str(tmp_path), dataset=None)
    assert cfg.root == str(tmp_path) and cfg.dataset == "vggsound"
    assert cfg.min_improvement == 0.25
    for path in (cfg.ingest_config, cfg.featurize_config, cfg.train_config, cfg.eval_config):
        assert Path(path).is_file(), path
    with pytest.raises(ConfigError, match="min_improvement"):
        load_retrain_config("configs/retrain/nightly.yaml", ["min_improvement=-1"])
    with pytest.raises(ConfigError, match="no_such_field"):
        load_retrain_config(None, ["no_such_field=1"])


def test_paths_resolve_from_the_source_tree_in_another_directory(tmp_path, monkeypatch):
    """A deployment's working directory need not be the checkout: the YAML and the stage
    configs it names resolve from the source tree."""
    monkeypatch.chdir(tmp_path)
    cfg = load_retrain_config("configs/retrain/nightly.yaml")
    assert Path(cfg.train_config).is_absolute() and Path(cfg.train_config).is_file()
    with pytest.raises(ConfigError, match="not found"):
        load_retrain_config("configs/retrain/no_such.yaml")


def test_a_night_run_again_trains_the_same_run_and_any_change_is_a_new_one(tmp_path):
    train = tmp_path / "train.yaml"
    train.write_text("steps: 100\n")
    cfg = load_retrain_config(None, [f"train_config={train}", "train_overrides=[seed=1]"])
    name = challenger_run_name(cfg, "shards-a", "s3://b/champion/model.pt")
    assert name.startswith("nightly-")
    assert challenger_run_name(cfg, "shards-a", "s3://b/champion/model.pt") == name  # resumed
    changed = [challenger_run_name(cfg, "shards-b", "s3://b/champion/model.pt"),  # new shards
               challenger_run_name(cfg, "shards-a", None)]  # another champion
    train.write_text("steps: 200\n")  # the train config's text
    changed.append(challenger_run_name(cfg, "shards-a", "s3://b/champion/model.pt"))
    cfg.train_overrides = ["seed=2"]
    changed.append(challenger_run_name(cfg, "shards-a", "s3://b/champion/model.pt"))
    assert len({name, *changed}) == 5
