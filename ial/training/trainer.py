"""The training loop of one rank: separator + independency critic, resumable exactly.

Two DeepSpeed engines (``ial.training.engines``; ``configs/deepspeed/*.json``, whose ``"critic"``
mapping is merged over it for the critic's engine). One step = one loader batch:

    mixtures ← make_mixtures(batch)                  (mix-and-separate, seeded generator)
    with critic frozen: separator loss → backward → separator engine step
    if the critic is due: critic loss on the detached components → backward → critic step

Every ``checkpoint_every`` steps both engines' state, each rank's loop state (step, loader
position, RNG states, memory bank) and the exports (``model.pt``, ``best/model.pt`` by validation
SDR) are saved, then the commit marker ``deepspeed/latest.json`` is written (``ial.training.
run_dir``): a run killed at any moment restarts from the last committed tag. SIGINT/SIGTERM stop
it at the next step, saved there. Layout: ``ial.training.run_dir``; see docs/training.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
from typing import Any

import numpy as np
import torch

from ial.config import ConfigError, save_config, to_dict
from ial.data.loader import LoaderPosition
from ial.errors import UserError
from ial.runtime import machine
from ial.storage import Storage, atomic_write, exists, isdir, read_text, upload_file, write_text
from ial.training.budget import (LR_DECAYS, StopSignals, TrainingStopped, agreed_progress,
                                 progress, scale_learning_rates)
from ial.training.config import TrainConfig, deepspeed_configs, method_config, model_config
from ial.training.engines import (build_engines, init_distributed, scalar_shapes,
                                  single_process_env, train_step)
from ial.training.run_dir import MARKER, RunDir, RunLock, git_sha, resume_mismatch
from ial.training.validation import validation_mixtures, validation_sdr


class NoTrainingData(UserError):
    """The dataset has no complete shards, or no train rows in them."""


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Train in the current process (rank/world size from the environment; one process
    without a launcher works too). Returns the run's result (see ``Trainer.result``)."""
    model_cfg = model_config(cfg)
    method_cfg = method_config(cfg)
    ds_sep, ds_critic = deepspeed_configs(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    if ds_sep.get("zero_optimization", {}).get("stage", 0) >= 3:
        raise ConfigError("deepspeed", "ZeRO stage 3 is not supported (the export needs whole "
                                       "weights on rank 0); use stage 0-2")
    single_process_env()
    # The process group lives as long as the process: DeepSpeed caches its groups, so a later
    # in-process run (same world) reuses it instead of re-creating it.
    deepspeed = init_distributed(cfg.backend, cfg.dist_timeout_s)
    lock = RunLock(RunDir(cfg), cfg.run_name) if torch.distributed.get_rank() == 0 else None
    with lock or contextlib.nullcontext():  # one training at a time in a run directory
        return Trainer(cfg, model_cfg, method_cfg, ds_sep, ds_critic, deepspeed).run(progress)


class Trainer:
    """One rank's training run. Use ``train(cfg)``; this class keeps the loop's state together."""

    def __init__(self, cfg: TrainConfig, model_cfg, method_cfg, ds_sep: dict, ds_critic: dict,
                 deepspeed):
        import torch.distributed as dist

        from ial.data.loader import list_dataset_shards, split_train_val
        from ial.method.objective import IALMethod
        from preprocessing.shards import dataset_digest, read_shard_metadata, shard_number

        self.cfg, self.model_cfg, self.method_cfg = cfg, model_cfg, method_cfg
        self.ds_configs = {"separator": ds_sep, "critic": ds_critic}
        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        store = Storage(cfg.root).check(what="storage root")
        self.paths = RunDir(cfg)

        self.shard_urls = list_dataset_shards(cfg.root, cfg.dataset)
        if not self.shard_urls:
            raise NoTrainingData(f"no complete shards of dataset {cfg.dataset!r} under "
                                 f"{store.url('shards', cfg.dataset)}: featurize it first "
                                 f"(ial featurize --root {cfg.root} --dataset {cfg.dataset})")
        # how the shards were made (featurize config, its hash, featurizer version, weights):
        # carried into every export's lineage so `ial separate` featurizes new videos the same way
        self.featurize_meta = read_shard_metadata(self.shard_urls[0])
        self.data_digest = dataset_digest(store, cfg.dataset, map(shard_number, self.shard_urls))
        self.splits = split_train_val(self.shard_urls, cfg.val_fraction)
        self.train_shards, self.val_shards = self.splits.train, self.splits.val
        self.classes = self.splits.classes
        if not self.train_shards:
            raise NoTrainingData(f"no rows with split 'train' in the {len(self.shard_urls)} "
                                 f"shards of {cfg.dataset!r} under {store.url('shards')}")
        if self.splits.carved_clips and self.rank == 0:
            print(f"validation: the shards have no 'val' rows; {self.splits.carved_clips} train "
                  f"clips of {self.splits.carved_videos} videos (val_fraction "
                  f"{cfg.val_fraction}, by video id) are held out for validation", file=sys.stderr)

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.method = IALMethod(model_cfg, method_cfg)
        self.init_from = None
        self.marker = self.paths.read_marker() if cfg.resume else None
        if self.marker is None and cfg.init_from:
            self._warm_start(cfg.init_from)
        self.sep, self.critic, self.scalars = build_engines(self.method, ds_sep, ds_critic,
                                                           deepspeed, cfg.channels_last)
        self.device = self.sep.device
        self.method.to(self.device)

        # Per-rank randomness (critic pairs, mixing), saved and restored for exact resume.
        torch.manual_seed(cfg.seed * 1000 + 1 + self.rank)
        np.random.seed(cfg.seed * 1000 + 1 + self.rank)
        random.seed(cfg.seed * 1000 + 1 + self.rank)
        self.mix_generator = torch.Generator().manual_seed(cfg.seed * 1000 + 2 + self.rank)
        self.step = 0
        self.position = None
        self.best_val_sdr: float | None = None
        self.last_val: dict[str, float] = {}
        self.records: list[dict] = []
        self.resumed_from: int | None = None
        self.stopped_by: str | None = None
        if self.marker is not None:
            self._resume(self.marker)

    # ----------------------------------------------------------------- setup helpers
    def _warm_start(self, url: str) -> None:
        from ial.models.export import read_export

        url = url.rstrip("/") + "/model.pt" if isdir(url) else url  # a run directory's export
        payload = read_export(url)
        if payload["model_name"] != self.model_cfg.name:
            raise ConfigError("init_from", f"{url} holds model {payload['model_name']!r}, this run "
                                           f"trains {self.model_cfg.name!r}")
        try:
            self.method.separator.load_state_dict(payload["state_dict"])
        except RuntimeError as exc:
            raise ConfigError("init_from", f"{url}: weights do not fit this run's model config: "
                                           f"{exc}") from None
        self.init_from = url

    def _resume(self, marker: dict) -> None:
        tag = marker["tag"]
        problem = resume_mismatch(marker, world_size=self.world, batch_size=self.cfg.batch_size,
                                  num_workers=self.cfg.num_workers)
        if problem:
            raise RuntimeError(f"{self.paths('deepspeed', MARKER)}: checkpoint {tag} {problem}")
        if self.paths.store.remote:
            if self.local_rank == 0:
                self.paths.download_tag(tag)
            self.dist.barrier()
        for name, engine in (("separator", self.sep), ("critic", self.critic)):
            path, _ = engine.load_checkpoint(self.paths.engine_dir(name), tag=tag)
            if path is None:
                raise RuntimeError("could not load DeepSpeed state "
                                   f"{self.paths.engine_dir(name)}/{tag}")
        state = torch.load(self._rank_state_path(tag), map_location="cpu", weights_only=False)
        self.step = state["step"]
        self.position = LoaderPosition(**state["position"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        self.mix_generator.set_state(state["mix_rng"])
        self.method.bank.load_state_dict(state["bank"])
        self.best_val_sdr = marker.get("best_val_sdr")
        self.last_val = marker.get("last_val", {})
        self.resumed_from = self.step
        if self.rank == 0:
            self.records = [r for r in self._read_metrics() if r.get("step", 0) <= self.step]

    def _rank_state_path(self, tag: str) -> str:
        return os.path.join(self.paths.engine_dir("separator"), tag, f"ial_rank{self.rank}.pt")

    def _read_metrics(self) -> list[dict]:
        url = self.paths("metrics.jsonl")
        lines = read_text(url).splitlines() if exists(url) else []
        return [json.loads(line) for line in lines if line.strip()]

    # ----------------------------------------------------------------- the loop
    def run(self, progress: bool = True) -> dict:
        from tqdm import tqdm

        from ial.data.loader import ShardStream

        cfg = self.cfg
        if self.rank == 0:
            self._save_run_config()
        writer = self._tensorboard()
        stream = ShardStream(self.train_shards, self.classes, seed=cfg.seed, rank=self.rank,
                             world_size=self.world, batch_size=cfg.batch_size,
                             num_workers=cfg.num_workers, train=True, drop_last=True,
                             segment_samples=cfg.segment_samples,
                             visual_input=self.model_cfg.visual_input,
                             speed_factors=tuple(cfg.speed_factors))
        self.val_mix = (validation_mixtures(self.val_shards, self.classes, self.method, cfg)
                        if self.rank == 0 else None)
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.run_name}", unit="step",
                   disable=not progress or self.rank != 0, dynamic_ncols=True)
        batches = stream.batches(self.position)
        saved_at = validated_at = self.step
        t0 = started = time.monotonic()
        budget = cfg.max_minutes * 60.0 if cfg.max_minutes else float("inf")
        with StopSignals() as stop, bar:  # an error closes the bar before its line shows
            while self.step < cfg.steps and (used := self._progress(started, budget, stop)) < 1:
                scale_learning_rates(self.sep.optimizer, LR_DECAYS[cfg.lr_decay](used))
                logs = self._train_step(next(batches))
                self.step += 1
                self.position = stream.position
                bar.update(1)
                if self.rank == 0 and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                    logs["samples_per_s"] = cfg.batch_size * self.world * cfg.log_every / max(
                        time.monotonic() - t0, 1e-9)
                    t0 = time.monotonic()
                    self._log(writer, "train", logs)
                    bar.set_postfix(loss=f"{logs.get('loss', float('nan')):.3f}",
                                    val_sdr=self.last_val.get("val_sdr"))
                if self.step % cfg.val_every == 0:
                    self._validate(writer)
                    validated_at = self.step
                if self.step % cfg.checkpoint_every == 0:
                    self._checkpoint(writer)
                    saved_at = self.step
        if validated_at != self.step and not self.stopped_by:  # a stop saves, then goes
            self._validate(writer)
        if saved_at != self.step:
            self._checkpoint(writer)
        if writer is not None:
            writer.close()
            self._upload_tensorboard()
        if self.stopped_by:
            raise TrainingStopped.at(cfg.run_name, self.stopped_by, self.step, cfg.steps,
                                     self.paths.url)
        result = self.result()
        if self.rank == 0:
            write_text(self.paths("result.json"), json.dumps(result, indent=2))
        self.dist.barrier()
        return result

    def _progress(self, started: float, budget: float, stop: StopSignals) -> float:
        """The budget used, agreed by every rank (``ial.training.budget.agreed_progress``)."""
        used = progress(self.step, self.cfg.steps, time.monotonic() - started, budget)
        used, self.stopped_by = agreed_progress(used, stop.signal, self.device)
        return used

    def _train_step(self, batch) -> dict[str, float]:
        mix = self.method.mixtures(batch.clips(), self.mix_generator).to(self.device)
        rates = self._learning_rates()  # the ones this step uses (the scheduler steps after)
        logs = train_step(self.method, self.sep, self.critic, mix, self.step)
        logs.update(rates)
        logs["epoch"] = float(batch.epoch)
        return logs

    def _learning_rates(self) -> dict[str, float]:
        """``lr``: the separator's main group (the model's ``DEFAULT_GROUP``); ``lr_<group>``:
        each other named group's (e.g. ``lr_visual``)."""
        groups = {g.get("name", str(i)): float(g["lr"])
                  for i, g in enumerate(self.sep.optimizer.param_groups)}
        main = self.method.separator.DEFAULT_GROUP
        out = {"lr": groups.pop(main) if main in groups else next(iter(groups.values()))}
        out.update({f"lr_{name}": lr for name, lr in groups.items()})
        return out

    # ----------------------------------------------------------------- validation
    def _validate(self, writer) -> None:
        """Validation SDR / SDRi (rank 0; BSS Eval v3 SDR of ``ial.evaluate.metrics``, fixed
        assignment, on the fixed val mixtures). Keeps best/model.pt by val SDR."""
        if self.rank == 0 and self.val_mix is not None:
            metrics = validation_sdr(self.method.separator, self.val_mix, self.cfg.segment_samples)
            self.last_val = metrics
            self._log(writer, "val", metrics)
            if metrics and self.cfg.keep_validated:
                self._export(self.paths("validated", f"step{self.step:08d}", "model.pt"))
            if metrics and (self.best_val_sdr is None or metrics["val_sdr"] > self.best_val_sdr):
                self.best_val_sdr = metrics["val_sdr"]
                self._export(self.paths("best", "model.pt"))
        self.dist.barrier()

    # ----------------------------------------------------------------- checkpoints
    def _checkpoint(self, writer) -> None:
        tag = f"step{self.step:08d}"
        state = {
            "step": self.step, "position": vars(self.position) if self.position else None,
            "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(), "mix_rng": self.mix_generator.get_state(),
            "bank": {k: v.cpu() for k, v in self.method.bank.state_dict().items()},
        }
        if state["position"] is None:
            state["position"] = vars(LoaderPosition())
        path = self._rank_state_path(tag)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
        self.sep.save_checkpoint(self.paths.engine_dir("separator"), tag=tag,
                                 client_state={"step": self.step}, save_latest=False)
        self.critic.save_checkpoint(self.paths.engine_dir("critic"), tag=tag, save_latest=False)
        self.dist.barrier()
        if self.paths.store.remote and self.local_rank == 0:
            self.paths.upload_tag(tag)
        self.dist.barrier()
        keep: list[str] = []
        if self.rank == 0:
            previous = self.paths.read_marker()
            keep = [tag] + ([previous["tag"]] if previous and previous["tag"] != tag else [])
            keep = keep[: self.cfg.keep_checkpoints]
            # Logs and exports first, the commit marker last: a kill in between resumes from
            # the previous marker and truncates the logs back to it.
            self._flush_metrics()
            if writer is not None:
                writer.flush()
                self._upload_tensorboard()
            self._export(self.paths("model.pt"))
            if self.best_val_sdr is None and self.val_mix is None:
                self._export(self.paths("best", "model.pt"))
            write_text(self.paths("deepspeed", MARKER), json.dumps({
                "tag": tag, "step": self.step, "world_size": self.world,
                "batch_size": self.cfg.batch_size, "num_workers": self.cfg.num_workers,
                "best_val_sdr": self.best_val_sdr, "last_val": self.last_val,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2))
        keep_list = [keep]
        self.dist.broadcast_object_list(keep_list, src=0)
        if self.local_rank == 0:
            self.paths.prune(keep_list[0], remote=self.rank == 0)
        self.dist.barrier()

    def _export(self, url: str) -> None:
        from ial.models.export import export_model

        with scalar_shapes(self.scalars):
            export_model(url, self.method.separator, self.model_cfg, self.lineage(),
                         dict(self.last_val))

    def lineage(self) -> dict[str, Any]:
        return {
            "git_sha": git_sha(), "run": self.cfg.run_name, "run_dir": self.paths.url,
            "step": self.step, "dataset": self.cfg.dataset, "data_digest": self.data_digest,
            "machine": machine(), "classes": list(self.classes),
            "shards": list(self.shard_urls), "world_size": self.world, "init_from": self.init_from,
            "validation": {"carved_from_train": bool(self.splits.carved_clips),
                           "val_fraction": self.splits.val_fraction,
                           "clips": sum(len(s.rows) for s in self.val_shards),
                           "carved_clips": self.splits.carved_clips,
                           "carved_videos": self.splits.carved_videos},
            "featurize_config": self.featurize_meta.get("config"),
            "featurize": {k: self.featurize_meta.get(k)
                          for k in ("featurizer_version", "config_hash", "visual_weights")},
            "configs": {"train": to_dict(self.cfg), "model": to_dict(self.model_cfg),
                        "method": to_dict(self.method_cfg), "deepspeed": self.ds_configs},
        }

    def result(self) -> dict[str, Any]:
        best = self.paths("best", "model.pt")
        return {
            "run": self.cfg.run_name, "run_dir": self.paths.url,
            "checkpoint": self.paths("model.pt"),
            "best_checkpoint": best if exists(best) else None, "step": self.step,
            "metrics": dict(self.last_val), "best_val_sdr": self.best_val_sdr,
            "resumed_from_step": self.resumed_from, "world_size": self.world,
            "data_digest": self.data_digest, "machine": machine()}

    # ----------------------------------------------------------------- logging
    def _save_run_config(self) -> None:
        save_config(self.cfg, self.paths("config.yaml"))
        save_config(self.model_cfg, self.paths("model.yaml"))
        save_config(self.method_cfg, self.paths("method.yaml"))
        write_text(self.paths("deepspeed.json"), json.dumps(self.ds_configs, indent=2))

    def _tensorboard(self):
        if self.rank != 0:
            return None
        from torch.utils.tensorboard import SummaryWriter

        os.makedirs(self.paths.tb_local, exist_ok=True)
        return SummaryWriter(self.paths.tb_local, purge_step=self.step or None)

    def _upload_tensorboard(self) -> None:
        if not self.paths.store.remote or self.rank != 0:
            return
        for name in os.listdir(self.paths.tb_local):
            upload_file(os.path.join(self.paths.tb_local, name), self.paths("tensorboard", name))

    def _log(self, writer, split: str, values: dict[str, float]) -> None:
        record = {"step": self.step, "split": split,
                  "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **values}
        self.records.append(record)
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(f"{split}/{key}", value, self.step)
        if split == "val":
            self._flush_metrics()

    def _flush_metrics(self) -> None:
        lines = "".join(json.dumps(r) + "\n" for r in self.records)
        with atomic_write(self.paths("metrics.jsonl"), "w") as f:
            f.write(lines)
