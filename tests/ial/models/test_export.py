"""Model exports: self-describing, loadable with nothing else, clear errors naming the file."""

from __future__ import annotations

import io

import pytest
import torch

from ial.models import ModelConfig, build_model
from ial.models.export import CheckpointError, export_model, load_model
from ial.storage import sha256, write_bytes

TINY = ModelConfig(visual_channels=8, embed_dim=8, audio_channels=[4, 4, 4, 4], common_hidden=8)


def _export(url: str, cfg: ModelConfig = TINY):
    torch.manual_seed(0)
    model = build_model(cfg)
    lineage = {"git_sha": "abc123", "run": "r1", "step": 7, "shards": ["s0.parquet"]}
    export_model(url, model, cfg, lineage, {"val_sdr": 1.5})
    return model


@pytest.mark.parametrize("where", ["local", "s3"])
def test_export_loads_with_nothing_else(tmp_path, request, where):
    root = str(tmp_path) if where == "local" else request.getfixturevalue("s3_root")
    url = f"{root}/checkpoints/r1/model.pt"
    model = _export(url)
    loaded, meta = load_model(url)
    assert meta["model_name"] == "ial_cms" and meta["model_cfg"] == TINY
    assert meta["lineage"]["step"] == 7 and meta["metrics"] == {"val_sdr": 1.5}
    assert set(meta["versions"]) == {"ial", "torch", "deepspeed", "python"}
    assert meta["sha256"] == sha256(url)  # of the bytes read, not saved in the file
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_run_directory_names_its_exports(tmp_path, request, where):
    root = str(tmp_path) if where == "local" else request.getfixturevalue("s3_root")
    run = f"{root}/checkpoints/r1"
    _export(f"{run}/model.pt")
    _export(f"{run}/best/model.pt")
    with pytest.raises(CheckpointError) as exc:
        load_model(run + "/")
    assert str(exc.value) == (
        f"{run}/: a directory, not a model export; pass one of its exports: "
        f"{run}/best/model.pt (best by validation), {run}/model.pt (the latest step)")
    with pytest.raises(CheckpointError) as exc:  # the run's best/ holds its best export
        load_model(f"{run}/best")
    assert str(exc.value).endswith(f"{run}/best/model.pt (best by validation)")
    with pytest.raises(CheckpointError, match=f"^{root}/checkpoints: a directory, not a model "
                       r"export \(no model.pt in it\)$"):
        load_model(f"{root}/checkpoints")


def test_a_missing_bucket_is_named_not_a_missing_file(s3_root):
    from ial.storage import StorageError

    bucket = s3_root.split("/")[2]
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_model(f"{s3_root}/checkpoints/none/model.pt")  # the bucket exists, the file not
    with pytest.raises(StorageError, match=f"checkpoint s3://{bucket}-x/m.pt: bucket "
                       f"'{bucket}-x' does not exist"):
        load_model(f"s3://{bucket}-x/m.pt")


class NotPlainData:
    """An object ``torch.load(weights_only=True)`` refuses to unpickle."""


def test_clear_errors_name_the_file(tmp_path):
    missing = str(tmp_path / "nope" / "model.pt")
    with pytest.raises(CheckpointError, match="nope/model.pt: no such checkpoint"):
        load_model(missing)

    junk = str(tmp_path / "junk.pt")
    write_bytes(junk, b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pt: not an IAL model export "
                       r"\(not a torch.save archive: 16 bytes, truncated or another"):
        load_model(junk)

    objects = str(tmp_path / "objects.pt")
    buf = io.BytesIO()
    torch.save({"format": "ial-model", "thing": NotPlainData()}, buf)
    write_bytes(objects, buf.getvalue())
    write_bytes(junk, buf.getvalue()[:-40])  # truncated
    messages = []
    for bad in (objects, junk):
        with pytest.raises(CheckpointError) as exc:
            load_model(bad)
        messages.append(str(exc.value))
    # one line each, without torch's advice to load with weights_only=False (which runs its code)
    assert not [m for m in messages if "\n" in m or "weights_only" in m]
    assert "torch.load cannot read it: UnpicklingError: Unsupported global: GLOBAL" in messages[0]
    assert "junk.pt: not an IAL model export (not a torch.save archive" in messages[1]

    plain = str(tmp_path / "plain.pt")
    buf = io.BytesIO()
    torch.save({"state_dict": {}}, buf)
    write_bytes(plain, buf.getvalue())
    with pytest.raises(CheckpointError, match="plain.pt: not an IAL model export"):
        load_model(plain)

    url = str(tmp_path / "model.pt")
    _export(url)
    payload = torch.load(url, weights_only=True)
    payload["model_name"] = "no_such_model"
    torch.save(payload, url)
    with pytest.raises(CheckpointError, match="model.pt: unknown model 'no_such_model'"):
        load_model(url)

    payload["model_name"] = "ial_cms"
    payload["model_config"]["embed_dim"] = 16  # weights no longer fit
    torch.save(payload, url)
    with pytest.raises(CheckpointError, match="model.pt: weights do not match"):
        load_model(url)
