"""DeepSpeed training: 1 process, 2 processes (deepspeed launcher, gloo), kill → exact resume,
s3:// root (staged + uploaded), export loads into ial.evaluate. Tiny model, tiny clips."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from ial.config import save_config
from ial.data.synthetic import write_synthetic_shards as write_shards
from ial.separate.waveforms import training_window
from ial.storage import Storage, exists, read_text
from ial.training.config import TrainConfig
from ial.training.engines import single_process_env
from ial.runtime import machine
from ial.training.launcher import launch
from ial.training.trainer import train
from preprocessing.shards import dataset_digest
from tests.conftest import DISTRIBUTED_ENV

pytestmark = pytest.mark.slow

TINY_MODEL = {"visual_channels": 8, "embed_dim": 8, "audio_channels": [4, 4, 4, 4],
              "common_hidden": 8}
TINY_METHOD = {"bank_size": 16, "critic_ndf": 4, "critic_input_size": [16, 16],
               "lambda_ind_steps": [0, 2], "drop_hardest": 0}
SPLITS = ("train", "train", "val", "train", "test", "train")


def tiny_config(root: str, run_name: str, **values) -> TrainConfig:
    fields = dict(root=root, dataset="toy", run_name=run_name, model=TINY_MODEL,
                  method=TINY_METHOD, batch_size=4, steps=8, segment_samples=4095, val_every=4,
                  val_mixtures=2, checkpoint_every=2, log_every=1, num_workers=1, seed=3)
    fields.update(values)
    return TrainConfig(**fields)


@pytest.fixture(scope="module")
def shards_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("train-root"))
    write_shards(root, shards=3, rows=12, samples=6000, splits=SPLITS)
    return root


@pytest.fixture
def child_env(tmp_path):
    """Environment of training subprocesses, with an empty DeepSpeed JIT cache to watch."""
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu",
               TORCH_EXTENSIONS_DIR=str(tmp_path / "torch_extensions"))
    for key in DISTRIBUTED_ENV:
        env.pop(key, None)
    return env


def _weights(url: str) -> dict:
    return torch.load(url, weights_only=True)["state_dict"]


def _assert_no_jit(env: dict) -> None:
    ext = env["TORCH_EXTENSIONS_DIR"]
    assert not os.path.exists(ext) or not os.listdir(ext), f"DeepSpeed compiled ops into {ext}"


@pytest.fixture(scope="module")
def uninterrupted(shards_root, tmp_path_factory):
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu",
               TORCH_EXTENSIONS_DIR=str(tmp_path_factory.mktemp("ext") / "cache"))
    for key in DISTRIBUTED_ENV:
        env.pop(key, None)
    result = launch(tiny_config(shards_root, "full"), progress=False, env=env)
    _assert_no_jit(env)
    return result


def test_one_process_run_writes_everything(uninterrupted, shards_root):
    res = uninterrupted
    assert res["step"] == 8 and res["world_size"] == 1 and res["resumed_from_step"] is None
    run = Storage(shards_root).url("checkpoints", "full")
    for name in ("config.yaml", "model.pt", "best/model.pt", "metrics.jsonl",
                 "deepspeed/latest.json", "deepspeed/separator/step00000008/ial_rank0.pt",
                 "deepspeed/critic/step00000008/mp_rank_00_model_states.pt"):
        assert exists(f"{run}/{name}"), name
    assert not exists(f"{run}/deepspeed/separator/step00000004")  # keep_checkpoints: 2
    records = [json.loads(x) for x in read_text(f"{run}/metrics.jsonl").splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == list(range(1, 9))
    train = [r for r in records if r["split"] == "train"]
    assert all("critic_loss" in r for r in train)  # the critic trains on every batch
    # the separator's lr (configs/deepspeed/cpu.json) apart from the visual group's
    assert all(r["lr"] == 1e-4 and r["lr_visual"] == 1e-3 for r in train)
    updates = [r for r in train if r["separator_update"]]  # the separator on every 3rd
    assert [r["step"] for r in updates] == [1, 4, 7]
    assert all({"loss", "loss_sep", "lambda_ind", "lambda_av"} <= set(r) for r in updates)
    assert [r["step"] for r in records if r["split"] == "val"] == [4, 8]
    assert os.listdir(f"{run}/tensorboard")
    meta = torch.load(res["checkpoint"], weights_only=True)
    assert meta["lineage"]["step"] == 8 and meta["lineage"]["shards"]
    # the data it trained on, by content: what the quality benchmark keys its reuse on
    assert meta["lineage"]["data_digest"] == res["data_digest"] == dataset_digest(
        Storage(shards_root), meta["lineage"]["dataset"])
    # and the machine it trained on (deterministic on one machine only)
    assert meta["lineage"]["machine"] == res["machine"] == machine()
    assert res["machine"]["cpu"] and res["machine"]["cpus"] >= 1
    assert meta["lineage"]["configs"]["train"]["run_name"] == "full"
    assert training_window(meta) == 4095  # evaluation and `ial separate` slide this window
    assert "val_sdr" in meta["metrics"]


def test_killed_run_resumes_to_the_same_weights(uninterrupted, shards_root, child_env):
    cfg = tiny_config(shards_root, "killed")
    run = Storage(shards_root).url("checkpoints", "killed")
    save_config(cfg, f"{run}/launch.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "ial.training", "--config", f"{run}/launch.yaml",
                             "--no-progress"], env=single_process_env(dict(child_env)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = f"{run}/deepspeed/latest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if exists(marker) and json.loads(read_text(marker))["step"] >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = json.loads(read_text(marker))["step"]
    assert killed_at < 8

    res = launch(cfg, progress=False, env=child_env)
    assert res["resumed_from_step"] == killed_at and res["step"] == 8
    full, resumed = _weights(uninterrupted["checkpoint"]), _weights(res["checkpoint"])
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key  # exact, not just close
    records = [json.loads(x) for x in read_text(f"{run}/metrics.jsonl").splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 9))
    _assert_no_jit(child_env)


LAUNCH = """
import sys
from ial.errors import UserError
from ial.training.launcher import launch
try:
    launch(sys.argv[1], progress=False)
except UserError as exc:
    print(f"Error: {exc}")
    sys.exit(1)
"""


def test_sigterm_saves_at_that_step_and_the_run_resumes_there(shards_root, child_env):
    # what a flow's launch() does: the rank runs in a subprocess; the signal reaches the
    # launching process only (a scheduler's stop) and is passed on to the rank
    cfg = tiny_config(shards_root, "stopped", steps=10_000, val_every=3,
                      checkpoint_every=10_000)
    run = Storage(shards_root).url("checkpoints", "stopped")
    save_config(cfg, f"{run}/wanted.yaml")
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, f"{run}/wanted.yaml"], env=child_env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    while not exists(f"{run}/metrics.jsonl") and proc.poll() is None:  # validated at step 3
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    stopped = re.search(r"^Error: training 'stopped' stopped by SIGTERM at step (\d+) of 10000, "
                        rf"saved there in {re.escape(run)}: run the same command again to "
                        "resume$", out, re.M)
    assert stopped, out
    step = int(stopped.group(1))
    assert step >= 3 and json.loads(read_text(f"{run}/deepspeed/latest.json"))["step"] == step
    assert not exists(f"{run}/result.json")

    res = launch(tiny_config(shards_root, "stopped", steps=step + 2, val_every=3,
                             checkpoint_every=10_000), progress=False, env=child_env)
    assert res["resumed_from_step"] == step and res["step"] == step + 2


def test_a_rank_whose_output_has_closed_stops_and_tells_its_launcher(shards_root, child_env):
    # a rank started over ssh whose connection closed before its loop began: it does not die of
    # a BrokenPipeError (nor of SIGHUP's default); it stops before its first step and its one
    # line reaches the launcher through --error-url (a file any node can write)
    cfg = tiny_config(shards_root, "hung-up", steps=10_000)
    run = Storage(shards_root).url("checkpoints", "hung-up")
    save_config(cfg, f"{run}/launch.yaml")
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads the rank's output: its progress bar fails to write
    try:  # SIGHUP at its default in the rank, as over ssh (under nohup it stays ignored)
        proc = subprocess.run([sys.executable, "-m", "ial.training", "--config",
                               f"{run}/launch.yaml", "--error-url", f"{run}/launch-x.error"],
                              env=single_process_env(dict(child_env)), stdout=write_end,
                              stderr=write_end, timeout=120,
                              preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    finally:
        os.close(write_end)
    assert proc.returncode == 2
    assert read_text(f"{run}/launch-x.error") == (
        "training 'hung-up' stopped by SIGHUP before its first step, with nothing to save: run "
        "the same command again to start it")
    assert not exists(f"{run}/deepspeed/latest.json")


def test_a_batch_the_split_cannot_fill_is_one_line_below_the_closed_bar(shards_root, child_env):
    cfg = tiny_config(shards_root, "too-big", batch_size=1000)
    run = Storage(shards_root).url("checkpoints", "too-big")
    save_config(cfg, f"{run}/launch.yaml")
    proc = subprocess.run([sys.executable, "-m", "ial.training", "--config", f"{run}/launch.yaml"],
                          env=single_process_env(dict(child_env)), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "train too-big" in proc.stderr  # the bar was shown, and closed before the line
    assert proc.stderr.endswith("\nError: config field 'batch_size': 1000 clips per batch, but "
                                "the split's 24 clips across 1 rank(s) give this rank no full "
                                "batch: lower batch_size or use fewer ranks\n"), proc.stderr


def test_two_processes_with_the_deepspeed_launcher(shards_root, child_env):
    cfg = tiny_config(shards_root, "two", steps=4, val_every=4)
    res = launch(cfg, num_procs=2, progress=False, env=child_env)
    assert res["world_size"] == 2 and res["step"] == 4
    tag = Storage(shards_root).url("checkpoints", "two", "deepspeed", "separator", "step00000004")
    assert exists(f"{tag}/ial_rank0.pt") and exists(f"{tag}/ial_rank1.pt")
    from ial.models.export import load_model

    model, meta = load_model(res["checkpoint"])
    assert meta["lineage"]["world_size"] == 2
    _assert_no_jit(child_env)


def test_export_loads_into_ial_evaluate(uninterrupted, shards_root, tmp_path):
    from ial.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(checkpoint=uninterrupted["best_checkpoint"],
                     data=Storage(shards_root).url("shards", "toy"), mix=2, n_per_combination=1,
                     max_mixtures=2, oracles=[], num_examples=0, out=str(tmp_path / "report"))
    results = evaluate(cfg, progress=False)
    assert results["sdr"] is not None


def test_s3_root_stages_uploads_and_resumes(s3_root, monkeypatch):
    write_shards(s3_root, shards=1, rows=12, samples=6000, splits=SPLITS)
    for key, value in single_process_env({}).items():
        monkeypatch.setenv(key, value)
    cfg = tiny_config(s3_root, "s3run", steps=2, checkpoint_every=1, val_every=2, num_workers=0,
                      staging_dir=None)
    first = train(cfg, progress=False)
    assert first["checkpoint"].startswith("s3://") and exists(first["checkpoint"])
    run = Storage(s3_root).url("checkpoints", "s3run")
    assert exists(f"{run}/deepspeed/separator/step00000002/ial_rank0.pt")
    assert exists(f"{run}/deepspeed/critic/step00000002/mp_rank_00_model_states.pt")
    again = train(tiny_config(s3_root, "s3run", steps=3, checkpoint_every=1, val_every=3,
                              num_workers=0), progress=False)
    assert again["resumed_from_step"] == 2 and again["step"] == 3
    assert exists(f"{run}/deepspeed/separator/step00000003/ial_rank0.pt")
    assert not exists(f"{run}/deepspeed/separator/step00000001")  # pruned on S3 too


def test_cli_help_and_config_errors_name_the_field():
    from click.testing import CliRunner

    from ial.cli import main

    runner = CliRunner()
    out = runner.invoke(main, ["train", "--help"]).output
    assert "--num-procs" in out and "--hostfile" in out and "One process on CPU" in out
    bad = runner.invoke(main, ["train", "--set", "batch_size=0"])
    assert bad.exit_code != 0 and "batch_size" in bad.output
    unknown = runner.invoke(main, ["train", "--set", "no_such_field=1"])
    assert unknown.exit_code != 0 and "no_such_field" in unknown.output


def test_deepspeed_configs_merge_the_critic_section(tmp_path):
    from ial.training.config import deepspeed_configs

    sep, critic = deepspeed_configs(TrainConfig(batch_size=6), world_size=2)
    assert sep["train_batch_size"] == 12 and sep["train_micro_batch_size_per_gpu"] == 6
    assert "critic" not in sep and sep["optimizer"]["params"]["torch_adam"] is True
    assert critic["optimizer"]["params"]["torch_adam"] is True  # merged, not replaced


def test_resume_refuses_a_different_layout():
    from ial.training.run_dir import resume_mismatch

    marker = {"tag": "step00000004", "world_size": 2, "batch_size": 8, "num_workers": 2}
    assert resume_mismatch(marker, world_size=2, batch_size=8, num_workers=2) is None
    msg = resume_mismatch(marker, world_size=2, batch_size=16, num_workers=2)
    assert "batch_size=8" in msg and "has 16" in msg and "resume: false" in msg
    assert "processes=2" in resume_mismatch(marker, world_size=1, batch_size=8, num_workers=2)
    assert "num_workers=2" in resume_mismatch(marker, world_size=2, batch_size=8, num_workers=0)
    # an older marker without the loader fields is only checked for what it has
    assert resume_mismatch({"world_size": 1}, world_size=1, batch_size=4, num_workers=3) is None


def test_validation_is_carved_from_train_when_the_shards_have_no_val(tmp_path):
    root = str(tmp_path / "root")
    write_shards(root, shards=2, rows=12, samples=6000, splits=("train", "train", "test"))
    single_process_env()
    res = train(tiny_config(root, "carve", steps=2, val_every=2, checkpoint_every=2,
                            num_workers=0, val_fraction=0.5), progress=False)
    assert res["best_val_sdr"] is not None  # best/model.pt chosen on held-out train videos
    lineage = torch.load(res["best_checkpoint"], weights_only=True)["lineage"]["validation"]
    assert lineage["carved_from_train"] and lineage["val_fraction"] == 0.5
    assert lineage["clips"] == lineage["carved_clips"] > 0


def test_a_val_split_of_one_class_is_one_clear_error(tmp_path):
    """Validation mixes clips of different classes: a val split of one class (a small corpus's
    one held-out video) is refused naming the split, not a ValueError from the mixing."""
    from ial.errors import UserError

    root = str(tmp_path / "root")  # clips 0-2 (class 0) are val, 3-7 (classes 1, 2) train
    write_shards(root, shards=1, rows=8, samples=6000, splits=("val",) * 3 + ("train",) * 5)
    single_process_env()
    with pytest.raises(UserError, match="the val split of dataset 'toy' .* has 3 clips of 1 "
                                        "class"):
        train(tiny_config(root, "oneclass", steps=2, val_every=2, checkpoint_every=2,
                          num_workers=0), progress=False)


def test_a_train_split_of_one_class_trains(tmp_path):
    """Training mixes clips of different labels where a batch allows; batches of one class (here
    all of them: the train split is one class) are mixed anyway rather than stopping the run."""
    root = str(tmp_path / "root")  # clips 0-2 (class 0) are train, 3-11 (classes 1-3) val
    write_shards(root, shards=1, rows=12, samples=6000, splits=("train",) * 3 + ("val",) * 9)
    single_process_env()
    res = train(tiny_config(root, "onetrainclass", steps=3, val_every=3, checkpoint_every=3,
                            num_workers=0, batch_size=2), progress=False)
    assert res["step"] == 3 and res["best_val_sdr"] is not None


def test_a_rank_that_stops_on_bad_input_reports_its_one_line(tmp_path, child_env):
    from ial.errors import UserError

    with pytest.raises(UserError, match="no complete shards of dataset 'toy'"):
        launch(tiny_config(str(tmp_path), "nothing"), progress=False, env=child_env)


def test_a_nested_set_applies_on_top_of_the_method_file():
    from ial.training.config import load_train_config

    demo = load_train_config("configs/train/demo.yaml", ["method.lambda_ind=0"])
    plain = load_train_config("configs/train/demo.yaml")
    assert demo.method.lambda_ind == 0.0
    assert (demo.method.drop_hardest, demo.method.bank_size) == (plain.method.drop_hardest,
                                                                 plain.method.bank_size)
    assert demo.model == plain.model


def test_whole_clip_validation_also_scores_the_first_window_and_keeps_each_export(
        uninterrupted, shards_root, child_env):
    # the same run as `uninterrupted`, validated on the clips' first 6000 samples (the whole
    # 6000-sample toy clips; the 4095-sample training window slides over them)
    res = launch(tiny_config(shards_root, "whole-clips", val_samples=6000, keep_validated=True),
                 progress=False, env=child_env)
    storage = Storage(shards_root)

    def val_records(run: str) -> dict[int, dict]:
        lines = read_text(storage.url("checkpoints", run, "metrics.jsonl")).splitlines()
        return {r["step"]: r for r in map(json.loads, lines) if r["split"] == "val"}

    whole, window = val_records("whole-clips"), val_records("full")
    assert sorted(whole) == sorted(window) == [4, 8]
    for step in (4, 8):  # the first window alone: what validation scored before val_samples
        assert whole[step]["val_sdr_window"] == pytest.approx(window[step]["val_sdr"], abs=1e-6)
        assert whole[step]["val_sdr"] != pytest.approx(window[step]["val_sdr"], abs=1e-6)
        meta = torch.load(storage.url("checkpoints", "whole-clips", "validated",
                                      f"step{step:08d}", "model.pt"), weights_only=True)
        assert meta["lineage"]["step"] == step
        assert meta["metrics"]["val_sdr"] == pytest.approx(whole[step]["val_sdr"])
    assert res["best_val_sdr"] == pytest.approx(max(whole[s]["val_sdr"] for s in (4, 8)))
    assert not exists(storage.url("checkpoints", "full", "validated"))  # off by default


def test_max_minutes_stops_at_a_step_boundary_then_validates_and_exports(tmp_path):
    root = str(tmp_path / "root")
    write_shards(root, shards=2, rows=12, samples=6000, splits=SPLITS)
    single_process_env()
    res = train(tiny_config(root, "budget", steps=10_000, val_every=10_000, num_workers=0,
                            max_minutes=1e-4), progress=False)  # 6 ms: the first step spends it
    assert 1 <= res["step"] < 10_000
    assert res["best_val_sdr"] is not None and exists(res["checkpoint"])


def test_cosine_lr_decay_over_the_steps_is_what_the_steps_used(tmp_path):
    root = str(tmp_path / "root")
    write_shards(root, shards=2, rows=12, samples=6000, splits=SPLITS)
    single_process_env()
    train(tiny_config(root, "cosine", num_workers=0, lr_decay="cosine"), progress=False)
    lines = read_text(Storage(root).url("checkpoints", "cosine", "metrics.jsonl")).splitlines()
    lrs = {r["step"]: r["lr"] for r in map(json.loads, lines) if r.get("split") == "train"}
    base = lrs[1]
    assert sorted(lrs) == list(range(1, 9))
    for step, lr in lrs.items():  # step s is logged after it ran at progress (s - 1) / 8
        assert lr == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * (step - 1) / 8)))


def test_run_settings_are_checked():
    from ial.config import ConfigError

    for field, value in (("max_minutes", -1.0), ("dist_timeout_s", 0), ("lr_decay", "cos"),
                         ("val_samples", -1), ("val_samples", 500), ("segment_samples", 100)):
        with pytest.raises(ConfigError, match=field):
            tiny_config("/tmp", "x", **{field: value}).validate()
