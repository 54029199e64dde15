"""``ial info CHECKPOINT``: what an export says of itself, read back from the file alone."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from ial.cli import main
from ial.models import ModelConfig, build_model
from ial.models.export import export_model
from ial.runtime import machine

TINY = ModelConfig(visual_channels=8, embed_dim=8, audio_channels=[4, 4, 4, 4], common_hidden=8)


def export(url: str, **lineage) -> str:
    torch.manual_seed(0)
    base = {"git_sha": "0123456789abcdef", "run": "nightly", "step": 1200, "world_size": 8,
            "dataset": "vggsound", "data_digest": "eed846591de4c2e3",
            "shards": ["s0.parquet", "s1.parquet"]}
    return export_model(url, build_model(TINY), TINY, {**base, **lineage},
                        {"val_sdr": 6.5, "val_mixtures": 96.0})


def info(*args: str):
    return CliRunner().invoke(main, ["info", *args])


def test_info_says_model_run_data_machine_and_metrics(tmp_path):
    classes = [f"class {i}" for i in range(9)] + ["playing violin, fiddle"]
    url = export(str(tmp_path / "model.pt"), classes=classes, machine=machine(),
                 validation={"carved_from_train": True, "val_fraction": 0.05, "clips": 40,
                             "carved_clips": 40, "carved_videos": 31},
                 featurize={"featurizer_version": "1.0.0", "config_hash": "1a9b840ab09fa909",
                            "visual_weights": "resnet18-f37072fd.pth"})
    result = info(url)
    assert result.exit_code == 0, result.output
    lines = {line[:12].strip(): line[13:] for line in result.output.splitlines()}
    weights = sum(t.numel() for t in build_model(TINY).state_dict().values())
    assert lines["model"].startswith(f"ial_cms (export format 1), {weights / 1e6:.2f} M values")
    assert lines["trained"] == "run 'nightly', step 1200, 8 processes, git 0123456789"
    assert lines["data"].startswith("dataset 'vggsound' (digest eed846591de4c2e3), 2 shards, "
                                    "10 classes: 'class 0',")
    assert lines["data"].endswith("'class 7', … (2 more)")  # a label with a comma stays whole
    assert lines["validation"] == "40 clips held out of train (31 videos, val_fraction 0.05)"
    assert lines["features"].endswith("visual weights resnet18-f37072fd.pth")
    assert lines["machine"].startswith(machine()["cpu"])
    assert lines["val metrics"] == "val_sdr 6.50, val_mixtures 96"


def test_an_older_export_says_what_it_did_not_record(tmp_path):
    result = info(export(str(tmp_path / "model.pt")))
    assert result.exit_code == 0, result.output
    for what in ("validation", "features", "machine"):
        assert f"{what:12s} not recorded" in result.output


def test_json_is_everything_but_the_weights(tmp_path):
    url = export(str(tmp_path / "model.pt"), machine=machine())
    meta = json.loads(info(url, "--json").output)
    assert "state_dict" not in meta and meta["lineage"]["machine"] == machine()
    assert meta["model_config"]["embed_dim"] == 8 and meta["url"] == url


def test_a_missing_or_foreign_file_is_one_error_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    for path, said in ((tmp_path / "none.pt", "no such checkpoint file"),
                       (tmp_path / "notes.txt", "not an IAL model export")):
        result = info(str(path))
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert [line for line in result.output.splitlines() if line.startswith("Error: ")] == \
            [line for line in result.output.splitlines() if line.strip()], result.output
        assert said in result.output
