"""``TrainConfig``: what ``ial.training`` trains, on what, for how long (``configs/train/*.yaml``).

``model`` and ``method`` are either a path to their own YAML (``configs/model/demo.yaml``, resolved
against the working directory, then the repository) or the config written inline as a mapping.
``deepspeed`` names the DeepSpeed JSON (ZeRO stage, bf16 switch, gradient clipping, optimizer);
its optional top-level ``"critic"`` mapping is merged over it for the critic's engine (e.g. its
own learning rate). ``backend`` picks the process-group backend: ``gloo`` (CPU) or ``nccl`` (GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ial.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


@dataclass
class TrainConfig:
    # Storage root (local directory or s3://bucket/prefix) holding shards/ and checkpoints/.
    root: str = "./data"
    # Dataset under shards/<dataset>/; its rows' `split` column gives train/val.
    dataset: str = "vggsound"
    # Run name: everything goes to <root>/checkpoints/<run_name>/.
    run_name: str = "default"
    # Separator: path to a ModelConfig YAML, or the fields inline.
    model: Any = "configs/model/ial_cms.yaml"
    # Method (losses, λ schedules, critic, mixing): path to a MethodConfig YAML, or inline.
    method: Any = "configs/method/ial.yaml"
    # DeepSpeed JSON (configs/deepspeed/cpu.json or gpu_bf16_zero2.json).
    deepspeed: str = "configs/deepspeed/cpu.json"
    # torch.distributed backend: gloo on CPU, nccl on GPU (configuration only, no code change).
    backend: Literal["gloo", "nccl"] = "gloo"
    # Clips per rank per step (the loader's batch; mixtures = batch_size // n_mix).
    batch_size: int = 8
    # Training steps (one batch each: a critic update every step, a separator update as the
    # method schedules it).
    steps: int = 20000
    # Samples per training window (65535 = 256 STFT frames, the paper's ~5.94 s).
    segment_samples: int = 65535
    # Validate (SDR on fixed val mixtures) every N steps, and at the end.
    val_every: int = 1000
    # Number of fixed validation mixtures (built once from the first val clips).
    val_mixtures: int = 16
    # Save DeepSpeed state + export model.pt every N steps, and at the end.
    checkpoint_every: int = 1000
    # Log losses to metrics.jsonl / TensorBoard every N steps.
    log_every: int = 10
    # Checkpoint tags kept for resume (older ones are deleted after a newer one is committed).
    keep_checkpoints: int = 2
    seed: int = 0
    # DataLoader worker processes per rank (0 = read shards in the training process).
    num_workers: int = 2
    # Resume from checkpoints/<run_name>/ when it holds a committed checkpoint.
    resume: bool = True
    # Warm start: initialise the separator from this model.pt (or a run directory's model.pt);
    # optimizers, step and data position start fresh. Used by the nightly retraining.
    init_from: str | None = None
    # Local directory for DeepSpeed state when root is s3:// (uploaded after each save).
    staging_dir: str | None = None

    def validate(self) -> None:
        for name in ("batch_size", "steps", "segment_samples", "val_every", "val_mixtures",
                     "checkpoint_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")
        if self.num_workers < 0:
            raise ConfigError("num_workers", "must be >= 0")
        if not self.run_name or "/" in self.run_name:
            raise ConfigError("run_name", "must be a non-empty name without '/'")
        for name in ("model", "method"):
            if not isinstance(getattr(self, name), (str, dict)) and not hasattr(
                    getattr(self, name), "__dataclass_fields__"):
                raise ConfigError(name, "must be a YAML path or a mapping of its fields")


def resolve_path(path: str) -> str:
    """A config path as given if it exists (or is a URL), else relative to the repository."""
    if "://" in path or Path(path).exists():
        return path
    candidate = REPO / path
    return str(candidate) if candidate.exists() else path


def load_train_config(path: str | None = None, overrides=(), **values) -> TrainConfig:
    """``TrainConfig`` from a YAML file (resolved like ``resolve_path``) + keyword values +
    ``key=value`` overrides."""
    return load_config(TrainConfig, resolve_path(path) if path else None, overrides, **values)


def sub_config(cfg: TrainConfig, name: str, cls: type):
    """The nested model/method config of ``cfg`` as ``cls`` (loaded from its path if a string)."""
    from ial.config import from_dict

    value = getattr(cfg, name)
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        resolved = resolve_path(value)
        if "://" not in resolved and not Path(resolved).exists():
            raise ConfigError(name, f"config file not found: {value}")
        return load_config(cls, resolved)
    try:
        return from_dict(cls, value)
    except ConfigError as exc:
        raise ConfigError(f"{name}.{exc.field}", str(exc).split(": ", 1)[1]) from None


def deepspeed_configs(cfg: TrainConfig, world_size: int) -> tuple[dict, dict]:
    """(separator, critic) DeepSpeed config dicts from ``cfg.deepspeed``.

    The batch fields are set from ``batch_size`` (DeepSpeed only uses them for bookkeeping: the
    loop calls ``backward``/``step`` itself). The critic's config is the file's top-level
    ``"critic"`` mapping merged over the rest.
    """
    import json

    from ial.config import merge

    path = resolve_path(cfg.deepspeed)
    try:
        with open(path) as f:
            base = json.load(f)
    except FileNotFoundError:
        raise ConfigError("deepspeed", f"DeepSpeed config not found: {cfg.deepspeed}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError("deepspeed", f"{path}: invalid JSON: {exc}") from None
    critic_part = base.pop("critic", {})
    base.pop("comment", None)
    base["train_micro_batch_size_per_gpu"] = cfg.batch_size
    base["gradient_accumulation_steps"] = 1
    base["train_batch_size"] = cfg.batch_size * world_size
    base.setdefault("steps_per_print", 10**9)
    return base, merge(base, critic_part)
