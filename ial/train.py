"""DeepSpeed training of the IAL separator + independency critic, resumable exactly.

Two DeepSpeed engines (``configs/deepspeed/*.json``): the separator's and the critic's (the JSON's
``"critic"`` mapping is merged over it for the second engine). One step = one loader batch:

    mixtures ← make_mixtures(batch)                  (mix-and-separate, seeded generator)
    with critic frozen: separator loss → backward → separator engine step
    if the critic is due: critic loss on the detached components → backward → critic step

Where things go (``docs/architecture.md``), under ``<root>/checkpoints/<run>/``::

    config.yaml                    the run's TrainConfig (+ resolved model/method configs)
    deepspeed/separator/<tag>/     DeepSpeed state of the separator engine (+ ial_rank<r>.pt:
                                   step, loader position, RNG states, memory bank of rank r)
    deepspeed/critic/<tag>/        DeepSpeed state of the critic engine (optimizer, bank)
    deepspeed/latest.json          the commit marker: the last COMPLETE checkpoint tag
    model.pt, best/model.pt        exports (ial.checkpoint): latest, best by validation SDR
    metrics.jsonl, tensorboard/    losses, λ, validation SDR
    result.json                    what the finished run produced (read by ``launch``)

A checkpoint is committed by writing ``deepspeed/latest.json`` atomically after every rank's
files are saved; a run killed at any moment restarts from the last committed tag (tags newer
than the marker are ignored and overwritten). With an ``s3://`` root DeepSpeed writes to a local
staging directory, the tag directories are uploaded before the marker is written, and a resumed
run downloads the marked tag first.

Run it: ``ial train`` (one CPU process: sets RANK/WORLD_SIZE/MASTER_* itself), ``ial train
--num-procs 2`` or ``launch(cfg, num_procs=2)`` (the ``deepspeed`` launcher with a free
``--master_port``), ``--hostfile`` for several nodes; see docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ial.config import ConfigError, save_config, to_dict
from ial.storage import (Storage, atomic_write, exists, filesystem, join, read_text,
                         upload_file, write_text)
from ial.train_config import (REPO, TrainConfig, deepspeed_configs, load_train_config,
                              sub_config)

MARKER = "latest.json"


# --------------------------------------------------------------------------- process setup
def free_port() -> int:
    """A TCP port free on loopback right now (for MASTER_PORT / --master_port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_env(env: dict | None = None) -> dict:
    """Set what torch.distributed needs for one process without a launcher (in ``env``,
    default ``os.environ``), unless a launcher already set RANK/WORLD_SIZE. Returns ``env``."""
    env = os.environ if env is None else env
    if "RANK" not in env or "WORLD_SIZE" not in env:
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(free_port()))
    return env


def import_deepspeed(backend: str):
    """Import DeepSpeed for ``backend`` without paying its first-use JIT compilations.

    gloo → the CPU accelerator (``DS_ACCELERATOR=cpu`` unless set). The ``deepspeed_shm_comm``
    op (a 65–110 s g++ build on first use) is marked incompatible so DeepSpeed uses plain
    torch.distributed collectives; the configs set ``"torch_adam": true`` so no fused Adam is
    built either (DEPENDENCIES.md).
    """
    if backend == "gloo":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    return deepspeed


def vectorize_scalar_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Give every 0-dim parameter of ``module`` shape (1,) (same storage); returns them.

    DeepSpeed 0.19.8 cannot handle 0-dim parameters (its model broadcast views each parameter as
    bytes, its gradient clipping multiplies by a (1,) tensor in place — both raise). A learnable
    scalar (e.g. a sigmoid's slope) broadcasts the same as a (1,) tensor, so training is
    unchanged; ``scalar_shapes`` restores the original shapes around an export so ``model.pt``
    matches ``build_model``.
    """
    scalars = [p for p in module.parameters() if p.dim() == 0]
    for p in scalars:
        p.data = p.data.view(1)
    return scalars


class scalar_shapes:
    """Context: the given (vectorized) parameters are 0-dim again inside (same storage)."""

    def __init__(self, params: list[torch.nn.Parameter]):
        self.params = params

    def __enter__(self):
        for p in self.params:
            p.data = p.data.view(())

    def __exit__(self, *exc):
        for p in self.params:
            p.data = p.data.view(1)


def build_engines(method, ds_sep: dict, ds_critic: dict, deepspeed):
    """(separator engine, critic engine, vectorized scalar parameters) for an ``IALMethod``.

    The critic's parameters must be trainable here (ZeRO only takes trainable parameters);
    ``train_step`` freezes them during the separator's backward.
    """
    scalars = vectorize_scalar_parameters(method)
    sep, _, _, _ = deepspeed.initialize(model=method.separator, config=ds_sep,
                                        model_parameters=method.separator.parameters())
    critic, _, _, _ = deepspeed.initialize(model=method.critic, config=ds_critic,
                                           model_parameters=method.critic.parameters())
    if sep.dp_world_size == 1 and not sep.zero_optimization():
        # One data-parallel rank: nothing to all-reduce (DeepSpeed would still flatten, "reduce"
        # and copy back every gradient after each backward).
        sep.enable_backward_allreduce = critic.enable_backward_allreduce = False
    return sep, critic, scalars


def git_sha() -> str:
    """The repository's commit (``+dirty`` when it has local changes), or ``unknown``."""
    try:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --------------------------------------------------------------------------- run layout
class RunDir:
    """URLs of one run under the root, and the local directory DeepSpeed writes to."""

    def __init__(self, cfg: TrainConfig):
        self.store = Storage(cfg.root)
        self.url = self.store.url("checkpoints", cfg.run_name)
        if self.store.remote:
            base = cfg.staging_dir or os.path.join(tempfile.gettempdir(), "ial-staging")
            safe = self.url.split("://", 1)[1].replace("/", "_")
            self.local = os.path.join(base, safe)
        else:
            self.local = self.url
        self.ds_local = os.path.join(self.local, "deepspeed")
        self.tb_local = os.path.join(self.local, "tensorboard")

    def __call__(self, *parts: str) -> str:
        """URL of a file of this run: ``run("best", "model.pt")``."""
        return join(self.url, *parts)

    def engine_dir(self, engine: str) -> str:
        return os.path.join(self.ds_local, engine)

    def read_marker(self) -> dict | None:
        url = self("deepspeed", MARKER)
        return json.loads(read_text(url)) if exists(url) else None

    def upload_tag(self, tag: str) -> None:
        """Copy the local tag directories to the remote run (remote roots only)."""
        for engine in ("separator", "critic"):
            local = os.path.join(self.engine_dir(engine), tag)
            for dirpath, _, files in os.walk(local):
                for name in files:
                    path = os.path.join(dirpath, name)
                    rel = os.path.relpath(path, self.ds_local).replace(os.sep, "/")
                    upload_file(path, self("deepspeed", rel))

    def download_tag(self, tag: str) -> None:
        """Fetch a tag's directories from the remote run into local staging."""
        for engine in ("separator", "critic"):
            fs, path = filesystem(self("deepspeed", engine, tag))
            for remote in fs.find(path):
                rel = remote[len(path):].lstrip("/")
                local = os.path.join(self.engine_dir(engine), tag, rel)
                os.makedirs(os.path.dirname(local), exist_ok=True)
                fs.get_file(remote, local)

    def prune(self, keep: list[str], remote: bool) -> None:
        """Delete tag directories not in ``keep`` (locally; and remotely when ``remote``)."""
        for engine in ("separator", "critic"):
            d = self.engine_dir(engine)
            for name in os.listdir(d) if os.path.isdir(d) else []:
                if name.startswith("step") and name not in keep:
                    shutil.rmtree(os.path.join(d, name), ignore_errors=True)
            if remote and self.store.remote:
                fs, path = filesystem(self("deepspeed", engine))
                for entry in fs.ls(path, detail=False) if fs.exists(path) else []:
                    if entry.rstrip("/").rsplit("/", 1)[-1] not in keep:
                        fs.rm(entry, recursive=True)


# --------------------------------------------------------------------------- training
def resume_mismatch(marker: dict, **current) -> str | None:
    """Why a checkpoint cannot be resumed exactly by this run, or None.

    Exact mid-epoch resume replays the loader position (batches of an epoch per rank), which means
    the same samples only with the same ``world_size`` (processes), ``batch_size`` and
    ``num_workers`` (loader processes per rank, which interleave the shards). Markers written
    before a field was recorded are not checked for it.
    """
    what = {"world_size": "processes", "batch_size": "batch_size", "num_workers": "num_workers"}
    for key, value in current.items():
        saved = marker.get(key, value)
        if saved != value:
            return (f"was saved with {what[key]}={saved}, this run has {value}: exact resume "
                    f"needs the same {what[key]}; use {saved} or set resume: false")
    return None


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Train in the current process (rank/world size from the environment; one process
    without a launcher works too). Returns the run's result (see ``Trainer.result``)."""
    from ial.method import MethodConfig
    from ial.models import ModelConfig

    model_cfg = sub_config(cfg, "model", ModelConfig)
    method_cfg = sub_config(cfg, "method", MethodConfig)
    ds_sep, ds_critic = deepspeed_configs(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    if ds_sep.get("zero_optimization", {}).get("stage", 0) >= 3:
        raise ConfigError("deepspeed", "ZeRO stage 3 is not supported (the export needs whole "
                                       "weights on rank 0); use stage 0-2")
    single_process_env()
    deepspeed = import_deepspeed(cfg.backend)
    # The process group lives as long as the process: DeepSpeed caches its groups, so a later
    # in-process run (same world) reuses it instead of re-creating it.
    deepspeed.init_distributed(dist_backend=cfg.backend)
    trainer = Trainer(cfg, model_cfg, method_cfg, ds_sep, ds_critic, deepspeed)
    return trainer.run(progress)


class Trainer:
    """One rank's training run. Use ``train(cfg)``; this class keeps the loop's state together."""

    def __init__(self, cfg: TrainConfig, model_cfg, method_cfg, ds_sep: dict, ds_critic: dict,
                 deepspeed):
        import torch.distributed as dist

        from ial.data.loader import list_dataset_shards, scan_split
        from preprocessing.shards import read_shard_metadata
        from ial.method import IALMethod

        self.cfg, self.model_cfg, self.method_cfg = cfg, model_cfg, method_cfg
        self.ds_configs = {"separator": ds_sep, "critic": ds_critic}
        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.paths = RunDir(cfg)

        self.shard_urls = list_dataset_shards(cfg.root, cfg.dataset)
        if not self.shard_urls:
            raise FileNotFoundError(f"no complete shards under {Storage(cfg.root).url('shards', cfg.dataset)}")
        # how the shards were made (featurize config, its hash, featurizer version, weights):
        # carried into every export's lineage so `ial separate` featurizes new videos the same way
        self.featurize_meta = read_shard_metadata(self.shard_urls[0])
        self.train_shards, self.classes = scan_split(self.shard_urls, "train")
        self.val_shards, _ = scan_split(self.shard_urls, "val")
        if not self.train_shards:
            raise ValueError(f"no rows with split 'train' in the shards of {cfg.dataset!r}")

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.method = IALMethod(model_cfg, method_cfg)
        self.init_from = None
        self.marker = self.paths.read_marker() if cfg.resume else None
        if self.marker is None and cfg.init_from:
            self._warm_start(cfg.init_from)
        self.sep, self.critic, self.scalars = build_engines(self.method, ds_sep, ds_critic,
                                                           deepspeed)
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
        if self.marker is not None:
            self._resume(self.marker)

    # ----------------------------------------------------------------- setup helpers
    def _warm_start(self, url: str) -> None:
        from ial.checkpoint import read_export

        if not url.endswith(".pt"):
            url = url.rstrip("/") + "/model.pt"
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
                raise RuntimeError(f"could not load DeepSpeed state {self.paths.engine_dir(name)}/{tag}")
        state = torch.load(self._rank_state_path(tag), map_location="cpu", weights_only=False)
        self.step = state["step"]
        from ial.data.loader import LoaderPosition

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
        if not exists(url):
            return []
        return [json.loads(line) for line in read_text(url).splitlines() if line.strip()]

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
                             segment_samples=cfg.segment_samples)
        self.val_mix = self._validation_mixtures() if self.rank == 0 else None
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.run_name}", unit="step",
                   disable=not progress or self.rank != 0, dynamic_ncols=True)
        batches = stream.batches(self.position)
        saved_at = validated_at = self.step
        t0 = time.monotonic()
        while self.step < cfg.steps:
            batch = next(batches)
            logs = self._train_step(batch)
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
        bar.close()
        if validated_at != self.step:
            self._validate(writer)
        if saved_at != self.step:
            self._checkpoint(writer)
        if writer is not None:
            writer.close()
            self._upload_tensorboard()
        result = self.result()
        if self.rank == 0:
            write_text(self.paths("result.json"), json.dumps(result, indent=2))
        self.dist.barrier()
        return result

    def _train_step(self, batch) -> dict[str, float]:
        mix = self.method.mixtures(batch.clips(), self.mix_generator).to(self.device)
        logs = train_step(self.method, self.sep, self.critic, mix, self.step)
        logs["lr"] = float(self.sep.get_lr()[0])
        logs["epoch"] = float(batch.epoch)
        return logs

    # ----------------------------------------------------------------- validation
    def _validation_mixtures(self):
        """Fixed val mixtures: the first val clips in shard order, grouped by a seeded generator.

        Returns a MixBatch (up to ``val_mixtures`` mixtures of ``segment_samples`` samples, each
        clip's first window) or None when the data has no val split.
        """
        from ial.data.loader import ShardEpoch

        if not self.val_shards:
            print(f"WARNING: no 'val' rows in {self.cfg.dataset}: no validation SDR, the best "
                  "checkpoint is the latest", file=sys.stderr)
            return None
        n = self.cfg.val_mixtures * self.method_cfg.n_mix * 2
        epoch = ShardEpoch(self.val_shards, self.classes, epoch=0, seed=self.cfg.seed, rank=0,
                           world_size=1, batch_size=n, num_workers=0, train=False,
                           drop_last=False, segment_samples=self.cfg.segment_samples)
        batch = next(iter(epoch))
        mix = self.method.mixtures(batch.clips(), torch.Generator().manual_seed(self.cfg.seed))
        keep = min(self.cfg.val_mixtures, mix.mixture.shape[0])
        mix.mixture, mix.sources, mix.visual = mix.mixture[:keep], mix.sources[:keep], mix.visual[:keep]
        mix.labels, mix.gains, mix.clip_ids = mix.labels[:keep], mix.gains[:keep], mix.clip_ids[:keep]
        return mix

    def _validate(self, writer) -> None:
        """Validation SDR / SDRi (rank 0; BSS Eval v3 SDR of ``ial.evaluate.metrics``, fixed
        assignment, on the fixed val mixtures). Keeps best/model.pt by val SDR."""
        if self.rank == 0 and self.val_mix is not None:
            metrics = validation_sdr(self.method.separator, self.val_mix, self.cfg.segment_samples)
            self.last_val = metrics
            self._log(writer, "val", metrics)
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
            from ial.data.loader import LoaderPosition

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
        from ial.checkpoint import export_model

        with scalar_shapes(self.scalars):
            export_model(url, self.method.separator, self.model_cfg, self.lineage(),
                         dict(self.last_val))

    def lineage(self) -> dict[str, Any]:
        return {
            "git_sha": git_sha(), "run": self.cfg.run_name, "run_dir": self.paths.url,
            "step": self.step, "dataset": self.cfg.dataset, "classes": list(self.classes),
            "shards": list(self.shard_urls), "world_size": self.world, "init_from": self.init_from,
            "featurize_config": self.featurize_meta.get("config"),
            "featurize": {k: self.featurize_meta.get(k)
                          for k in ("featurizer_version", "config_hash", "visual_weights")},
            "configs": {"train": to_dict(self.cfg), "model": to_dict(self.model_cfg),
                        "method": to_dict(self.method_cfg), "deepspeed": self.ds_configs},
        }

    def result(self) -> dict[str, Any]:
        best = self.paths("best", "model.pt")
        return {
            "run": self.cfg.run_name, "run_dir": self.paths.url, "checkpoint": self.paths("model.pt"),
            "best_checkpoint": best if exists(best) else None, "step": self.step,
            "metrics": dict(self.last_val), "best_val_sdr": self.best_val_sdr,
            "resumed_from_step": self.resumed_from, "world_size": self.world,
        }

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


def train_step(method, sep_engine, critic_engine, mix, step: int) -> dict[str, float]:
    """One IAL step with two DeepSpeed engines on a MixBatch; returns the losses' logs.

    Separator: forward (through its engine) and backward with the critic frozen (its parameters
    must get no gradient), engine step. Critic, when due: hinge loss on the detached components,
    backward, engine step (this also pushes the components into the memory bank). The
    adversarial term scores pairs with the critic MODULE, not its engine: the engine's forward
    arms backward hooks that expect ``critic_engine.backward``, not the separator's backward.
    """
    sep_engine.train()
    critic_engine.train()
    with method.critic_frozen():
        loss, logs, components = method.separator_loss(mix, step, separator=sep_engine,
                                                       critic=method.critic)
        sep_engine.backward(loss)
    sep_engine.step()
    if method.critic_due(step):
        c_loss, c_logs = method.critic_loss(components, step, critic=critic_engine)
        critic_engine.backward(c_loss)
        critic_engine.step()
        logs.update(c_logs)
    return logs


def validation_sdr(separator: torch.nn.Module, mix, window: int) -> dict[str, float]:
    """Mean SDR and SDRi (dB) of ``separator`` on a MixBatch of validation mixtures.

    BSS Eval v3 SDR (``ial.evaluate.metrics.score_mixture``: fixed assignment of query i to
    source i, 512-tap distortion filter, scores clipped to ±100 dB); SDRi = SDR − SDR of the
    mixture itself. Components of one target (unsupervised duets) are summed first. Mixtures with
    a silent source are skipped. Returns {} when every mixture was skipped.
    """
    from ial.evaluate.metrics import score_mixture
    from ial.separation import separate_waveforms

    was_training = separator.training
    separator.eval()
    device = next(separator.parameters()).device
    est = separate_waveforms(separator, mix.mixture.to(device), mix.visual.to(device),
                             window=window).cpu().double()  # (M, N, L)
    separator.train(was_training)
    S = mix.sources.shape[1]
    if est.shape[1] != S:
        est = est.new_zeros(est.shape[0], S, est.shape[2]).index_add(1, mix.component_source, est)
    sdr, sdri = [], []
    for m in range(est.shape[0]):
        scores = score_mixture(mix.sources[m].double().numpy(), mix.mixture[m].double().numpy(),
                               {"model": est[m].numpy()})
        if scores is not None:
            sdr += scores["model"]["sdr"]
            sdri += scores["model"]["sdri"]
    if not sdr:
        return {}
    return {"val_sdr": float(np.mean(sdr)), "val_sdri": float(np.mean(sdri)),
            "val_mixtures": float(len(sdr) // S)}


# --------------------------------------------------------------------------- launching
def _as_config(cfg_path_or_cfg: str | TrainConfig | None, overrides=()) -> TrainConfig:
    if isinstance(cfg_path_or_cfg, TrainConfig):
        if overrides:
            from ial.config import from_dict, merge, parse_overrides

            return from_dict(TrainConfig, merge(to_dict(cfg_path_or_cfg), parse_overrides(overrides)))
        return cfg_path_or_cfg
    return load_train_config(cfg_path_or_cfg, overrides)


def launch(cfg_path_or_cfg: str | TrainConfig | None, num_procs: int = 1,
           hostfile: str | None = None, overrides=(), master_port: int | None = None,
           in_process: bool = False, progress: bool = True, env: dict | None = None) -> dict:
    """Run training and return its result (the dict of ``train``, read from result.json).

    - one process, no hostfile: ``python -m ial.train`` in a subprocess with RANK/WORLD_SIZE/
      MASTER_* set (or in this process with ``in_process=True``);
    - ``num_procs`` > 1 or a hostfile: the ``deepspeed`` launcher with ``--num_gpus num_procs``
      (processes per node; on CPU too) and a free ``--master_port``; ``--hostfile`` for several
      nodes (each node needs the same environment and code; the config is passed as a URL under
      the storage root so every node can read it).
    """
    cfg = _as_config(cfg_path_or_cfg, overrides)
    run = RunDir(cfg)
    if in_process and num_procs == 1 and hostfile is None:
        single_process_env()
        return train(cfg, progress=progress)
    config_url = run("launch.yaml")
    save_config(cfg, config_url)
    child_env = dict(os.environ if env is None else env)
    if cfg.backend == "gloo":
        child_env.setdefault("DS_ACCELERATOR", "cpu")
        child_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, num_procs))))
    args = ["--config", config_url] + ([] if progress else ["--no-progress"])
    if num_procs == 1 and hostfile is None:
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            child_env.pop(key, None)
        single_process_env(child_env)
        if master_port:
            child_env["MASTER_PORT"] = str(master_port)
        cmd = [sys.executable, "-m", "ial.train", *args]
    else:
        launcher = Path(sys.executable).with_name("deepspeed")
        cmd = [str(launcher) if launcher.exists() else "deepspeed",
               "--master_port", str(master_port or free_port()), "--num_gpus", str(num_procs)]
        if hostfile:
            cmd += ["--hostfile", hostfile]
        cmd += ["--module", "ial.train", *args]
    proc = subprocess.run(cmd, env=child_env)
    if proc.returncode != 0:
        raise RuntimeError(f"training exited with code {proc.returncode}: {' '.join(cmd)}")
    return json.loads(read_text(run("result.json")))


def main(argv: list[str] | None = None) -> None:
    """``python -m ial.train --config FILE [--set k=v ...]`` (what the launchers run per rank)."""
    parser = argparse.ArgumentParser(prog="python -m ial.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None, help="TrainConfig YAML (path or URL)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config field; repeatable")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help="set by the deepspeed launcher (LOCAL_RANK is used)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    cfg = load_train_config(args.config, args.overrides)
    result = train(cfg, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
