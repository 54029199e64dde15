"""``RetrainConfig``: what the nightly retraining ingests, trains and evaluates, and when it
promotes.

Loaded from ``configs/retrain/nightly.yaml`` (the deployment ``retrain/nightly``) with explicit
values and ``key=value`` overrides on top; the stage config paths it names resolve from the
working directory, else from the source tree (``ial.config_files.resolve_path``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from ial.config import load_config
from ial.config_files import load_yaml, resolve_path
from ial.errors import ConfigError
from ial.storage import read_text

STAGE_CONFIGS = ("ingest_config", "featurize_config", "train_config", "eval_config")


@dataclass
class RetrainConfig:
    """What the nightly retraining ingests, trains and evaluates, and when it promotes.

    Config paths are YAML files of each stage's config dataclass; ``*_overrides`` are ``key=value``
    overrides applied on top (as ``--set`` on the command line).
    """

    root: str = "./data"  # storage root: a directory or s3://bucket/prefix
    dataset: str = "vggsound"
    manifest: str | None = None  # default: <root>/manifests/<dataset>.csv
    manifest_format: str = "vggsound"  # vggsound | audioset | music | ...
    ingest_config: str | None = None
    ingest_overrides: list[str] = field(default_factory=list)
    featurize_config: str | None = None
    featurize_overrides: list[str] = field(default_factory=list)
    train_config: str | None = None
    train_overrides: list[str] = field(default_factory=list)
    num_procs: int = 1  # DeepSpeed processes for training
    eval_config: str | None = None
    eval_overrides: list[str] = field(default_factory=list)
    # The fixed held-out set both checkpoints are scored on (default <root>/shards/<dataset>, whose
    # test split the eval config selects). Point it at a frozen shard set so scores stay comparable;
    # if its content changes anyway, the champion is re-scored on the new version before comparing.
    eval_data: str | None = None
    eval_mix: int = 2  # sources per mixture at evaluation
    min_improvement: float = 0.0  # dB of mean SDR the challenger must gain to be promoted
    # true: min_improvement applies to the lower end of the paired 95 % interval of the gain
    # (challenger - champion source by source, `ial compare`), not to the mean gain
    require_ci: bool = False
    run_prefix: str = "nightly"  # training runs are named <run_prefix>-<key> (challenger_run_name)
    dask_address: str | None = None  # Dask scheduler for ingest/featurize (None: local cluster)

    def validate(self) -> None:
        if self.min_improvement < 0:
            raise ConfigError("min_improvement", "must be >= 0 dB")
        if self.num_procs < 1:
            raise ConfigError("num_procs", "must be >= 1")
        if self.eval_mix < 2:
            raise ConfigError("eval_mix", "must be >= 2 sources per mixture")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.run_prefix):
            raise ConfigError("run_prefix", "letters, digits, '_', '.', '-' only")


def load_retrain_config(config: str | None = None, overrides: list[str] | None = None,
                        **values) -> RetrainConfig:
    """YAML ← explicit values (None = keep) ← ``key=value`` overrides, validated; the stage
    configs' paths resolved (``resolve_path``, as ``load_config`` resolves the YAML's)."""
    cfg = load_config(RetrainConfig, config, overrides or (), **values)
    for name in STAGE_CONFIGS:
        if getattr(cfg, name):
            setattr(cfg, name, resolve_path(getattr(cfg, name)))
            try:  # a stage's file that is missing or no YAML is said now, not when it runs
                load_yaml(getattr(cfg, name))
            except ConfigError as exc:
                raise ConfigError(name, f"{exc.source}: {exc.message}", config) from None
    return cfg


def challenger_run_name(cfg: RetrainConfig, shards_fingerprint: str,
                        champion: str | None) -> str:
    """The night's training run: ``<run_prefix>-<key>``, the key a hash of what it trains on and
    from (the shards' fingerprint, the champion it warm-starts from, the train config's text and
    its overrides), not of the clock. A night run again after a crash or a stop, before its
    decision was recorded, trains the same run, which resumes from its last checkpoint (or, if
    it had finished, is not trained again); any change to those is a new run."""
    config_text = read_text(cfg.train_config) if cfg.train_config else None
    key = json.dumps([shards_fingerprint, champion, config_text, cfg.train_overrides])
    return f"{cfg.run_prefix}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
