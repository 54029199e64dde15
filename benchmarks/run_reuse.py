"""Which trainings and evaluations a rerun of the quality benchmark can reuse, and where a finished
training of another config goes (set aside beside its run folder, never deleted).

A run folder ``checkpoints/<model>-s<seed>[-<N>steps]`` holds one training. Trying a variant of a
model (say, another critic option) under the same seed trains into the same folder: the finished
training already there, and its report ``reports/<run>``, move to ``<run>.set-aside-<digest>``,
where ``<digest>`` names the config they were made with; switching back to that config moves them
back instead of training again. A report whose training is gone is set aside too. Only an
unfinished training is deleted: a step or wall-time budget cannot resume exactly.

A training is the same only on the same data too: the trainer records the dataset digest
(``preprocessing.shards.dataset_digest``) in ``result.json``; a new corpus, a relabeled or
re-featurized shard in the same ``--work`` gives another digest, so the training is set aside, not
reused. Trainings from before the digest was recorded are reused on their config alone. And only
with the same DeepSpeed configs as they act (``deepspeed_identity``): the train config names its
JSON by path, so an edit of the file's learning rates is another training; the trainer saves the
configs it used in ``deepspeed.json``. Where a training is stored is not part of it: a run folder
moved to another root or renamed (its config's ``root`` and ``run_name``) is the same training,
and its result's paths are read as under the folder it is in now.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import shutil
from pathlib import Path


# Where a training is stored, not what it is: the data it read is its dataset digest.
PLACE_FIELDS = ("root", "run_name")
# The paths in a training's result.json, under its run folder.
RESULT_PATHS = ("run_dir", "checkpoint", "best_checkpoint")


def training_identity(config: dict, data: str | None = None,
                      deepspeed: dict | None = None) -> dict:
    """A saved train config without what does not change the training: where it is stored
    (``PLACE_FIELDS``) and the critic's fields when λ_ind = 0
    (``ial.method.config.CRITIC_ONLY_FIELDS``); with the dataset digest ``data`` it trained on
    and its DeepSpeed configs ``deepspeed`` ({"separator": …, "critic": …}, as
    ``deepspeed_identity`` reads them), each when known (None: not recorded)."""
    from ial.method.config import CRITIC_ONLY_FIELDS

    method = dict(config.get("method") or {})
    adversary = method.get("lambda_ind") != 0
    if not adversary:
        method = {k: v for k, v in method.items() if k not in CRITIC_ONLY_FIELDS}
    identity = {k: v for k, v in config.items() if k not in PLACE_FIELDS}
    identity["method"] = method
    if data is not None:
        identity["data"] = data
    if deepspeed is not None:
        identity["deepspeed_configs"] = deepspeed_identity(deepspeed, adversary)
    return identity


def deepspeed_identity(configs: dict, adversary: bool) -> dict:
    """A training's DeepSpeed configs ({"separator": …, "critic": …}) as they act: an optimizer
    lr that the config's scheduler replaces with its one ``warmup_max_lr`` reads as that value (a
    critic that inherited the separator's WarmupLR, before ``ial.training.config.SEPARATOR_ONLY``,
    trained at its peak whatever lr it named); the critic's without parameter groups (it never
    used them), and left out without the adversary (no critic trains)."""
    from ial.training.config import scheduled_peak_lr

    acting = {}
    for part, ds in configs.items():
        if part == "critic" and not adversary:
            continue
        ds = json.loads(json.dumps(ds))
        if part == "critic":
            ds.pop("param_groups", None)
        peak = scheduled_peak_lr(ds)
        params = (ds.get("optimizer") or {}).get("params") or {}
        if peak is not None and "lr" in params:
            params["lr"] = peak
        acting[part] = ds
    return acting


def current_deepspeed(cfg) -> dict:
    """The DeepSpeed configs ``cfg`` trains with on one rank (the benchmark's), as the trainer
    saves them in ``deepspeed.json``."""
    from ial.training.config import deepspeed_configs

    return dict(zip(("separator", "critic"), deepspeed_configs(cfg, world_size=1)))


def recorded_deepspeed(run_dir: Path) -> dict | None:
    """The DeepSpeed configs a training in ``run_dir`` saved (None: none saved)."""
    saved = run_dir / "deepspeed.json"
    return json.loads(saved.read_text()) if saved.exists() else None


def recorded_data(run_dir: Path) -> str | None:
    """The dataset digest a finished training in ``run_dir`` recorded (None: none recorded, or
    not finished)."""
    result = run_dir / "result.json"
    return json.loads(result.read_text()).get("data_digest") if result.exists() else None


def saved_identity(run_dir: Path, config_type) -> dict | None:
    """The training identity of the config saved in ``run_dir`` (read through ``config_type``:
    a field added since it was saved takes its default, the earlier behaviour) with its recorded
    data digest and DeepSpeed configs, or None when there is none or it has a field that no
    longer exists."""
    from ial.config import ConfigError, load_config, to_dict
    saved = run_dir / "config.yaml"
    if not saved.exists():
        return None
    try:
        return training_identity(to_dict(load_config(config_type, saved)), recorded_data(run_dir),
                                 recorded_deepspeed(run_dir))
    except ConfigError:
        return None


def identity_digest(identity: dict) -> str:
    """12 hex digits naming a training identity (its canonical JSON's sha256)."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def finished_training(run_dir: Path, cfg, data: str | None = None) -> dict | None:
    """The result of a finished training of exactly ``cfg`` on the data of digest ``data`` in
    ``run_dir`` (result.json exists, its saved config.yaml is ``cfg``'s and its recorded
    ``data_digest`` is ``data``), else None. For a model without the adversary (λ_ind = 0) the
    fields that only configure the critic (``CRITIC_ONLY_FIELDS``) are not compared: they do not
    change its training. A field added since the run was saved compares at its default (the
    earlier behaviour); a field that no longer exists: not reusable. A training that recorded no
    digest (or ``data`` None) compares on its config alone, one that saved no DeepSpeed configs
    on its train config's JSON path alone."""
    from ial.config import to_dict

    result = run_dir / "result.json"
    if not result.exists():
        return None
    recorded = recorded_data(run_dir)
    same = recorded is None or data is None or recorded == data
    deepspeed = current_deepspeed(cfg) if (run_dir / "deepspeed.json").exists() else None
    same = same and saved_identity(run_dir, type(cfg)) == training_identity(to_dict(cfg),
                                                                             recorded, deepspeed)
    return relocated(json.loads(result.read_text()), run_dir) if same else None


def relocated(result: dict, run_dir: Path) -> dict:
    """A training's ``result`` with its paths (``RESULT_PATHS``) under ``run_dir``, where the
    training is now: it may have been moved or renamed since it wrote them."""
    was = result.get("run_dir")
    if not was:
        return result
    moved = {key: str(run_dir) + result[key][len(was):] for key in RESULT_PATHS
             if isinstance(result.get(key), str)
             and (result[key] == was or result[key].startswith(was.rstrip("/") + "/"))}
    return {**result, **moved}


def machine_note(result: dict) -> str:
    """What a reused training's ``result`` says of the machine it ran on, for the line that says
    it is reused: "" on this machine (``ial.runtime.machine``), else which CPU it was. A training
    is deterministic on one machine, not across CPUs: its row is not the one this machine would
    train (docs/experiments.md, "The adversary over the first half only")."""
    from ial.runtime import machine

    recorded = result.get("machine")
    if recorded is None:
        return "; trained before the machine was recorded"
    here = machine()
    if recorded == here:
        return ""
    return (f"; trained on another machine ({recorded.get('cpu')}, {recorded.get('cpus')} CPUs; "
            f"this one: {here['cpu']}, {here['cpus']} CPUs), so this machine would not train "
            "it bit for bit")


def claim_run(run_dir: Path, report_dir: Path, cfg, data: str | None = None) -> dict | None:
    """Make ``run_dir`` the place of ``cfg``'s training on the data of digest ``data``
    (``finished_training``); its result when that is finished.

    - a finished training of ``cfg`` there: its result;
    - one set aside earlier: moved back (with its report), its result;
    - a finished training of another config there: set aside with its report, None;
    - an unfinished training there: deleted, None; a report beside no finished training: set
      aside (``set_aside_report``).
    """
    result = finished_training(run_dir, cfg, data)
    if result is not None:
        return result
    if (run_dir / "result.json").exists():
        set_aside(run_dir, report_dir, type(cfg))
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    if (report_dir / "results.json").exists():  # the report of a training no longer here
        set_aside_report(report_dir)
    # any set-aside training of exactly this one, whatever digest named it (the digest's fields
    # changed over time: one set aside before names it otherwise)
    aside = sorted(run_dir.parent.glob(glob.escape(run_dir.name) + ".set-aside-*"))
    kept = next((k for k in aside if finished_training(k, cfg, data) is not None), None)
    if kept is None:
        return None
    suffix = kept.name[len(run_dir.name):]
    kept.rename(run_dir)
    kept_report = report_dir.with_name(report_dir.name + suffix)
    if kept_report.exists():
        shutil.rmtree(report_dir, ignore_errors=True)  # at most an unfinished evaluation
        kept_report.rename(report_dir)
    print(f"{run_dir.name}: moved back the finished training of this config set aside as "
          f"{kept.name}")
    return finished_training(run_dir, cfg, data)


def set_aside(run_dir: Path, report_dir: Path, config_type) -> Path:
    """Move a finished training and its report to ``<name>.set-aside-<digest>`` (the digest of
    its saved config and recorded data; an earlier one of the same there is replaced). Returns
    where the training went."""
    identity = saved_identity(run_dir, config_type)
    if identity is not None:
        digest = identity_digest(identity)
    else:  # no config, or one of fields that no longer exist: named by its bytes
        saved = next(f for f in (run_dir / "config.yaml", run_dir / "result.json") if f.exists())
        digest = hashlib.sha256(saved.read_bytes()).hexdigest()[:12]
    for src in (run_dir, report_dir):
        dst = src.with_name(f"{src.name}.set-aside-{digest}")
        if src.exists():
            shutil.rmtree(dst, ignore_errors=True)
            src.rename(dst)
    kept = run_dir.with_name(f"{run_dir.name}.set-aside-{digest}")
    print(f"{run_dir.name}: a finished training of another config is there; set aside as "
          f"{kept.name} (with its report), not deleted")
    return kept


def set_aside_report(report_dir: Path) -> Path:
    """Move a report whose training is gone to ``<name>.set-aside-report-<sha>`` (the first 12
    hex digits of the checkpoint it scored), so that evaluating a new training does not
    overwrite it. Returns where it went."""
    scored = json.loads((report_dir / "results.json").read_text()).get("checkpoint", {})
    kept = report_dir.with_name(f"{report_dir.name}.set-aside-report-"
                                f"{(scored.get('sha256') or 'unknown')[:12]}")
    shutil.rmtree(kept, ignore_errors=True)
    report_dir.rename(kept)
    print(f"{report_dir.name}: the report of a training that is no longer there set aside as "
          f"{kept.name}, not overwritten")
    return kept


# EvalConfig fields that decide nothing in a finished report: a report saved before one of them
# existed, or with another value, is still exactly this evaluation.
NOT_IN_REPORT = ("resume",)  # whether a stopped run's saved batches are reused


def stored_report(ecfg, checkpoint: str) -> dict | None:
    """The stored report (``results.json`` in ``ecfg.out``) of exactly this evaluation: the same
    eval config (its device resolved as ``evaluate`` resolves it; ``NOT_IN_REPORT`` fields
    aside) of the same checkpoint bytes (sha256), with the mask measures (a report written
    before them is scored again), else None."""
    from ial.config import to_dict
    from ial.runtime import torch_device
    from ial.storage import sha256

    path = Path(ecfg.out, "results.json")
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    wanted = json.loads(json.dumps(to_dict(dataclasses.replace(
        ecfg, device=torch_device(ecfg.device)))))
    kept = {k: v for k, v in (stored.get("config") or {}).items() if k not in NOT_IN_REPORT}
    if kept != {k: v for k, v in wanted.items() if k not in NOT_IN_REPORT} or \
            stored.get("checkpoint", {}).get("sha256") != sha256(checkpoint) or \
            "mask_own" not in stored.get("rows", {}).get("model", {}):
        return None
    return stored
