"""RetrainConfig: stage config paths resolved from the source tree, bad fields named."""

from __future__ import annotations

from pathlib import Path

import pytest

from ial.errors import ConfigError
from ial.nightly.config import load_retrain_config


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
