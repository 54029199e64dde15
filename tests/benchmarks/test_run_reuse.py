"""benchmarks/run_reuse.py: which finished trainings and reports a rerun reuses, and where one of
another config goes (set aside, never deleted)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import yaml

from benchmarks.run_reuse import claim_run, finished_training, machine_note, stored_report
from ial.config import dump_yaml, load_config, to_dict
from ial.evaluate import EvalConfig
from ial.runtime import machine
from ial.training.config import load_train_config
from tests.conftest import REPO


def train_config(tmp_path, *overrides):
    return load_train_config(str(REPO / "configs/train/realistic.yaml"), list(overrides),
                             root=str(tmp_path), run_name="run")


def finish(run, cfg, step, data=None):
    """A finished training of ``cfg`` in ``run`` on the data of digest ``data`` (None: from
    before digests were recorded), as the trainer leaves it (config, result, weights)."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(dump_yaml(cfg))
    (run / "model.pt").write_text(f"weights {step}")
    (run / "result.json").write_text(json.dumps(
        {"step": step} if data is None else {"step": step, "data_digest": data}))


def test_a_finished_training_is_reused_only_for_the_same_training(tmp_path):
    def config(*overrides):
        return train_config(tmp_path, *overrides)

    run = tmp_path / "run"
    run.mkdir()
    assert finished_training(run, config()) is None  # nothing there
    (run / "config.yaml").write_text(dump_yaml(config("method.lambda_ind=0")))
    assert finished_training(run, config("method.lambda_ind=0")) is None  # unfinished
    (run / "result.json").write_text('{"step": 7}')
    # cms trains no critic: a change of the critic alone is the same training ...
    assert finished_training(run, config("method.lambda_ind=0",
                                         "method.critic_input_size=[64, 32]",
                                         "method.critic_ndf=8")) == {"step": 7}
    # ... anything else is not
    assert finished_training(run, config("method.lambda_ind=0", "batch_size=16")) is None
    assert finished_training(run, config("method.lambda_ind=0", "method.lambda_cls=0.5")) is None
    # with the adversary on, the critic is part of the training
    (run / "config.yaml").write_text(dump_yaml(config()))
    assert finished_training(run, config()) == {"step": 7}
    assert finished_training(run, config("method.critic_ndf=8")) is None
    # saved before a field existed: the field compares at its default (the earlier behaviour)
    saved = yaml.safe_load(dump_yaml(config()))
    del saved["method"]["critic_pairs"]
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert finished_training(run, config()) == {"step": 7}
    assert finished_training(run, config("method.critic_pairs=label_matched")) is None
    saved["method"]["gone"] = 1  # a field that no longer exists: not the same training
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert finished_training(run, config()) is None


def test_a_finished_training_of_another_config_is_set_aside_and_moved_back(tmp_path):
    ckpts, reports = tmp_path / "checkpoints", tmp_path / "reports"
    run, report = ckpts / "run", reports / "run"
    any_cfg = train_config(tmp_path)
    matched = train_config(tmp_path, "method.critic_pairs=label_matched")
    assert claim_run(run, report, any_cfg) is None  # nothing there: train
    finish(run, any_cfg, 3000)
    report.mkdir(parents=True)
    (report / "results.json").write_text("report of any")
    assert claim_run(run, report, any_cfg) == {"step": 3000}  # reused, nothing moved
    assert sorted(p.name for p in ckpts.iterdir()) == ["run"]

    # another config: the finished one goes aside with its report, the folder is free
    assert claim_run(run, report, matched) is None
    assert not run.exists() and not report.exists()
    [aside] = ckpts.iterdir()
    assert aside.name.startswith("run.set-aside-")
    assert (aside / "model.pt").read_text() == "weights 3000"
    assert (reports / aside.name / "results.json").read_text() == "report of any"
    finish(run, matched, 2999)
    report.mkdir()
    (report / "results.json").write_text("report of label_matched")

    # the first config again: swapped back, the second set aside in its turn
    assert claim_run(run, report, any_cfg) == {"step": 3000}
    assert (report / "results.json").read_text() == "report of any"
    assert len(list(ckpts.iterdir())) == 2 and len(list(reports.iterdir())) == 2
    assert claim_run(run, report, matched) == {"step": 2999}
    assert (report / "results.json").read_text() == "report of label_matched"

    # one set aside under another digest (an earlier version's fields) is moved back too
    [any_aside] = [p for p in ckpts.iterdir() if p.name != "run"]
    legacy = any_aside.with_name("run.set-aside-0123456789ab")
    any_aside.rename(legacy)
    (reports / any_aside.name).rename(reports / legacy.name)
    assert claim_run(run, report, any_cfg) == {"step": 3000}
    assert (report / "results.json").read_text() == "report of any"
    assert claim_run(run, report, matched) == {"step": 2999}

    # an unfinished training (killed) is deleted: a budget cannot resume exactly; the report
    # beside it (of a training no longer there) is set aside, not overwritten
    (run / "result.json").unlink()
    (report / "results.json").write_text(json.dumps({"checkpoint": {"sha256": "ab" * 32}}))
    assert claim_run(run, report, matched) is None and not run.exists()
    assert len(list(ckpts.iterdir())) == 1  # any's training is still set aside
    assert not report.exists()
    assert (reports / ("run.set-aside-report-" + "ab" * 6)).is_dir()


def test_a_training_on_other_data_is_set_aside_not_reused(tmp_path):
    """The same config on another corpus (or relabeled shards) in the same --work is another
    training; one from before digests were recorded is reused on its config alone."""
    ckpts, reports = tmp_path / "checkpoints", tmp_path / "reports"
    run, report = ckpts / "run", reports / "run"
    cfg = train_config(tmp_path)
    finish(run, cfg, 3000, data="aaaa")
    assert claim_run(run, report, cfg, "aaaa") == {"step": 3000, "data_digest": "aaaa"}
    assert finished_training(run, cfg, "bbbb") is None
    assert claim_run(run, report, cfg, "bbbb") is None  # other data: set aside, train again
    [aside] = ckpts.iterdir()
    assert (aside / "model.pt").read_text() == "weights 3000"
    finish(run, cfg, 2999, data="bbbb")
    assert claim_run(run, report, cfg, "aaaa") == {"step": 3000, "data_digest": "aaaa"}
    assert claim_run(run, report, cfg, "bbbb") == {"step": 2999, "data_digest": "bbbb"}
    assert len(list(ckpts.iterdir())) == 2  # both kept, under their own names

    legacy = ckpts / "legacy"  # recorded no digest: compared on its config alone
    finish(legacy, cfg, 1000)
    assert claim_run(legacy, reports / "legacy", cfg, "bbbb") == {"step": 1000}
    other = train_config(tmp_path, "method.critic_ndf=8")
    assert claim_run(legacy, reports / "legacy", other, "bbbb") is None  # set aside by config
    assert claim_run(legacy, reports / "legacy", cfg, "bbbb") == {"step": 1000}  # moved back


def test_a_stored_report_is_reused_only_for_the_same_evaluation_of_the_same_file(tmp_path):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")

    def config(*overrides):
        return load_config(EvalConfig, REPO / "configs/eval/default.yaml", list(overrides),
                           checkpoint=str(checkpoint), data=str(tmp_path / "shards" / "x"),
                           out=str(tmp_path / "report"))

    assert stored_report(config(), str(checkpoint)) is None  # nothing there
    (tmp_path / "report").mkdir()
    stored = {"config": to_dict(dataclasses.replace(config(), device="cpu")),  # as evaluated
              "checkpoint": {"sha256": hashlib.sha256(b"weights").hexdigest()}, "mixtures": [],
              "rows": {"model": {"sdr": 1.0}}}
    (tmp_path / "report" / "results.json").write_text(json.dumps(stored))
    assert stored_report(config(), str(checkpoint)) is None  # written before the mask measures
    stored["rows"]["model"]["mask_own"] = 0.9
    (tmp_path / "report" / "results.json").write_text(json.dumps(stored))
    assert stored_report(config(), str(checkpoint)) == stored
    assert stored_report(config("n_per_combination=2"), str(checkpoint)) is None
    assert stored_report(config("resume=false"), str(checkpoint)) == stored  # scores the same
    del stored["config"]["resume"]  # a report from before that field
    (tmp_path / "report" / "results.json").write_text(json.dumps(stored))
    assert stored_report(config(), str(checkpoint)) == stored
    checkpoint.write_bytes(b"other weights")  # the run's best checkpoint changed since
    assert stored_report(config(), str(checkpoint)) is None


def test_an_edited_deepspeed_file_is_another_training_of_the_adversary(tmp_path):
    """The train config names its DeepSpeed JSON by path: an edit of the file's critic lr is
    another `ial` training, the same `cms` one (no critic); a critic that inherited the
    separator's warm-up trained at its peak, and reads so."""
    from benchmarks.run_reuse import current_deepspeed

    ds_file = tmp_path / "ds.json"
    ds = json.loads((REPO / "configs/deepspeed/realistic.json").read_text())
    ds_file.write_text(json.dumps(ds))
    ial = train_config(tmp_path, f"deepspeed={ds_file}")
    cms = train_config(tmp_path, f"deepspeed={ds_file}", "method.lambda_ind=0")
    runs = {}
    for name, cfg in (("ial", ial), ("cms", cms)):
        runs[name] = tmp_path / name
        finish(runs[name], cfg, 7)
        (runs[name] / "deepspeed.json").write_text(json.dumps(current_deepspeed(cfg)))
        assert finished_training(runs[name], cfg) == {"step": 7}
    # the critic as realistic.json gave it before 2026-12-05: its own lr 1e-4 named, the
    # separator's WarmupLR to 1e-3 inherited (and acting)
    saved = json.loads((runs["ial"] / "deepspeed.json").read_text())
    saved["critic"]["optimizer"]["params"]["lr"] = 1e-4
    saved["critic"]["param_groups"] = ds["param_groups"]
    (runs["ial"] / "deepspeed.json").write_text(json.dumps(saved))
    assert finished_training(runs["ial"], ial) == {"step": 7}
    # the file edited: the critic's peak lr 3e-3
    ds["critic"]["optimizer"]["params"]["lr"] = 3e-3
    ds["critic"]["scheduler"]["params"]["warmup_max_lr"] = 3e-3
    ds_file.write_text(json.dumps(ds))
    assert finished_training(runs["ial"], ial) is None
    assert finished_training(runs["cms"], cms) == {"step": 7}
    assert claim_run(runs["ial"], tmp_path / "report", ial) is None  # set aside, not lost
    ds["critic"]["optimizer"]["params"]["lr"] = 1e-3
    ds["critic"]["scheduler"]["params"]["warmup_max_lr"] = 1e-3
    ds_file.write_text(json.dumps(ds))  # back to 1e-3: moved back
    assert claim_run(runs["ial"], tmp_path / "report", ial) == {"step": 7}
    ds["gradient_clipping"] = 1.0  # the separator's part: another training of both
    ds_file.write_text(json.dumps(ds))
    assert finished_training(runs["cms"], cms) is None
    (runs["cms"] / "deepspeed.json").unlink()  # saved none: compared on the config alone
    assert finished_training(runs["cms"], cms) == {"step": 7}


def test_a_reused_training_says_when_it_ran_on_another_machine():
    """Training is deterministic on one machine, not across CPUs: reusing a run of another
    machine is said, naming both CPUs."""
    here = machine()
    assert machine_note({"step": 3, "machine": here}) == ""
    other = machine_note({"step": 3, "machine": {**here, "cpu": "Other CPU 9000"}})
    assert "another machine (Other CPU 9000" in other and here["cpu"] in other
    assert "before the machine was recorded" in machine_note({"step": 3})


def test_a_training_moved_to_another_root_and_renamed_is_the_same_training(tmp_path):
    old = tmp_path / "old-root" / "checkpoints" / "ial-head-s9"
    cfg = load_train_config(str(REPO / "configs/train/realistic.yaml"), [],
                            root=str(tmp_path / "old-root"), run_name="ial-head-s9")
    finish(old, cfg, 3000, data="d1")
    (old / "result.json").write_text(json.dumps(
        {"step": 3000, "data_digest": "d1", "run_dir": str(old),
         "checkpoint": str(old / "model.pt"), "best_checkpoint": str(old / "best" / "model.pt"),
         "elsewhere": "/some/other/path"}))
    new = tmp_path / "root" / "checkpoints" / "ial-s9"
    new.parent.mkdir(parents=True)
    old.rename(new)
    here = load_train_config(str(REPO / "configs/train/realistic.yaml"), [],
                             root=str(tmp_path / "root"), run_name="ial-s9")
    result = finished_training(new, here, "d1")
    assert result["run_dir"] == str(new) and result["checkpoint"] == str(new / "model.pt")
    assert result["best_checkpoint"] == str(new / "best" / "model.pt")
    assert result["elsewhere"] == "/some/other/path"
    beside = json.loads((new / "result.json").read_text())  # a folder beside, not under, it
    (new / "result.json").write_text(json.dumps({**beside, "checkpoint": f"{old}-copy/model.pt"}))
    assert finished_training(new, here, "d1")["checkpoint"] == f"{old}-copy/model.pt"
    (new / "result.json").write_text(json.dumps(beside))
    assert finished_training(new, here, "d2") is None  # the data still counts
    other = load_train_config(str(REPO / "configs/train/realistic.yaml"), ["seed=1"],
                              root=str(tmp_path / "root"), run_name="ial-s9")
    assert finished_training(new, other, "d1") is None  # and the config
