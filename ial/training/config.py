"""``TrainConfig``: what ``ial.training`` trains, on what, for how long (``configs/train/*.yaml``).

``model`` and ``method`` are either a path to their own YAML (``configs/model/demo.yaml``, resolved
against the working directory, then the repository) or the config written inline as a mapping;
once loaded they are ``ModelConfig``/``MethodConfig`` instances, and ``--set method.lambda_ind=0``
applies on top of the method file the config names (the run's saved config.yaml shows the merged
result).
``deepspeed`` names the DeepSpeed JSON (ZeRO stage, bf16 switch, gradient clipping, optimizer)
or holds its mapping: ``--set deepspeed.optimizer.params.lr=3e-4`` applies on top of the file the
config names (only keys the file has; the saved config.yaml holds the merged mapping). Its
optional top-level ``"critic"`` mapping is merged over it for the critic's engine (e.g. its own
learning rate), except the separator's ``"scheduler"`` and ``"param_groups"``, which the critic
never inherits (``SEPARATOR_ONLY``). ``backend`` picks the process-group backend: ``gloo``
(CPU) or ``nccl`` (GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ial.config import (REPO, ConfigError, json_config, load_config, read_json_config,
                        read_sub_config, sub_config)
from ial.method.config import MethodConfig
from ial.models.config import ModelConfig
from ial.signal import N_FFT
from ial.training.budget import LR_DECAYS

__all__ = ["REPO", "SEPARATOR_ONLY", "TrainConfig", "deepspeed_configs", "load_train_config",
           "method_config", "model_config", "scheduled_peak_lr"]


@dataclass
class TrainConfig:
    # Storage root (local directory or s3://bucket/prefix) holding shards/ and checkpoints/.
    root: str = "./data"
    # Dataset under shards/<dataset>/; its rows' `split` column gives train/val.
    dataset: str = "vggsound"
    # Run name: everything goes to <root>/checkpoints/<run_name>/.
    run_name: str = "default"
    # Separator: path to a ModelConfig YAML, or the fields inline.
    model: Any = sub_config(ModelConfig, "configs/model/ial_cms.yaml")
    # Method (losses, λ schedules, critic, mixing): path to a MethodConfig YAML, or inline.
    method: Any = sub_config(MethodConfig, "configs/method/ial.yaml")
    # DeepSpeed JSON (configs/deepspeed/cpu.json or gpu_bf16_zero2.json), or its mapping inline
    # (what a nested --set deepspeed.<key>=... makes of the file).
    deepspeed: Any = json_config("configs/deepspeed/cpu.json")
    # torch.distributed backend: gloo on CPU, nccl on GPU (configuration only, no code change).
    backend: Literal["gloo", "nccl"] = "gloo"
    # Seconds a collective may wait for a peer before the run fails (a dead node's rank ends
    # the run after this, for a resume; torch's default is 30 minutes).
    dist_timeout_s: int = 1800
    # Clips per rank per step (the loader's batch; mixtures = batch_size // n_mix, or
    # batch_size // (2·n_mix) with duets built from solo pairs). 16 = the authors' 8 two-source
    # mixtures.
    batch_size: int = 16
    # Training steps (one batch each: a critic update every step, a separator update as the
    # method schedules it).
    steps: int = 20000
    # Stop after this many minutes of training (the loop, not the set-up), at a step boundary,
    # then validate and checkpoint as at the end (0: no limit; a resumed run gets it anew).
    # The quality benchmark trains each model for the same wall time this way.
    max_minutes: float = 0.0
    # The separator's learning-rate decay over the run's budget (``ial.training.budget``:
    # "constant" or "cosine"), a factor on top of the DeepSpeed scheduler's lr, by the fraction
    # of `steps` or `max_minutes` used, whichever is further: a wall-time budget does not know
    # its step count, so a step-indexed DeepSpeed schedule cannot end with it. The critic's lr
    # is not decayed.
    lr_decay: str = "constant"
    # Samples per training window (65535 = 256 STFT frames, the paper's ~5.94 s).
    segment_samples: int = 65535
    # Speed perturbation of training clips (ial.data.speed): each clip's window is played at one
    # of these factors, drawn per clip and epoch from the seed (pitch and tempo together; 1.1 is
    # ~1.7 semitones up and 10 % faster), before mixing. Empty (or only 1.0): off, the default and
    # the authors' recipe. Kaldi's speech recipes use [0.9, 1.0, 1.1]. Validation and evaluation
    # never perturb.
    speed_factors: list[float] = field(default_factory=list)
    # Validate (SDR on fixed val mixtures) every N steps, and at the end.
    val_every: int = 1000
    # Number of fixed validation mixtures (built once from the first val clips).
    val_mixtures: int = 16
    # Samples (@ 11025 Hz) of each val clip that validation separates and scores, from its
    # start, sliding the training window over them with half overlap as ial.evaluate does over
    # whole clips. 0: one training window (segment_samples). 110250: a whole 10-s clip, the
    # evaluation's protocol (costs ~window count times more separation per check).
    val_samples: int = 0
    # Also export every validated model to validated/step<N>/model.pt (its meta carries its
    # val metrics), for choosing a checkpoint afterwards by another measure. Off: only
    # best/model.pt (by val SDR) and the latest model.pt are exported.
    keep_validated: bool = False
    # When the shards have no 'val' rows (VGGSound/AudioSet manifests have train/test only),
    # this fraction of the train videos (by a hash of the video id: deterministic, never test
    # rows) is held out for validation, so best/model.pt is chosen on data it never trained on.
    # 0: no validation. Recorded in every export's lineage ("validation").
    val_fraction: float = 0.05
    # Save DeepSpeed state + export model.pt every N steps, and at the end.
    checkpoint_every: int = 1000
    # Log losses to metrics.jsonl / TensorBoard every N steps.
    log_every: int = 10
    # Checkpoint tags kept for resume (older ones are deleted after a newer one is committed).
    keep_checkpoints: int = 2
    seed: int = 0
    # Conv weights, activations and their gradients in channels-last (NHWC) memory: the same
    # arithmetic in another order (fp-rounding differences only), ×1.2–1.4 faster training steps
    # of the realistic recipe on CPU with oneDNN (measured side by side by
    # benchmarks/separation_quality.py) and the layout GPU tensor cores prefer. Narrow 1×1
    # stride-2 convs, whose CPU backward corrupts the heap in PyTorch 2.13 when channels-last,
    # run as a stride-1 conv of the subsampled input (ial.training.engines.to_channels_last).
    # OFF by default: on a GPU it does not help (one H200, bf16 autocast: x0.95-1.02 for the
    # steps of gpu.yaml's and realistic.yaml's models; benchmarks/gpu_check.sh, docs/training.md).
    # configs/train/realistic.yaml turns it on. Not applied under ZeRO (stage > 0, e.g.
    # configs/deepspeed/gpu_bf16_zero2.json): its optimizer owns flat parameter buffers.
    # Exports are plain state_dicts either way.
    channels_last: bool = False
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
                     "checkpoint_every", "log_every", "keep_checkpoints", "dist_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")
        if self.num_workers < 0:
            raise ConfigError("num_workers", "must be >= 0")
        if not isinstance(self.deepspeed, (str, dict)):
            raise ConfigError("deepspeed", f"expected a path to a DeepSpeed JSON or its mapping, "
                                           f"got {self.deepspeed!r}")
        from ial.data.speed import check_factors

        if (why := check_factors(self.speed_factors)) is not None:
            raise ConfigError("speed_factors", why)
        if self.segment_samples < N_FFT:
            raise ConfigError("segment_samples", f"must be >= {N_FFT} samples (one STFT frame)")
        if self.val_samples < 0 or 0 < self.val_samples < N_FFT:
            raise ConfigError("val_samples", f"must be 0 (one training window) or >= {N_FFT} "
                                             "samples (one STFT frame)")
        if self.max_minutes < 0:
            raise ConfigError("max_minutes", "must be >= 0 (0: no limit)")
        if self.lr_decay not in LR_DECAYS:
            raise ConfigError("lr_decay", f"unknown decay {self.lr_decay!r} (known: "
                                          f"{', '.join(LR_DECAYS)})")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("val_fraction", "must be in [0, 1)")
        if not self.run_name or "/" in self.run_name:
            raise ConfigError("run_name", "must be a non-empty name without '/'")
        for name in ("model", "method"):
            if not isinstance(getattr(self, name), (str, dict, ModelConfig, MethodConfig)):
                raise ConfigError(name, "must be a YAML path or a mapping of its fields")
        if isinstance(self.method, MethodConfig):
            check_infonce_negatives(self.batch_size, self.method)


def check_infonce_negatives(batch_size: int, method: MethodConfig) -> None:
    """L_av contrasts each of a batch's embeddings with the others, minus the ``drop_hardest``
    most similar: at least 2 negatives must remain per anchor, else it is a (near) no-op."""
    if method.lambda_av <= 0:
        return
    mixtures = batch_size // method.clips_per_mixture
    embeddings = mixtures * method.components_per_mixture
    left = embeddings - 1 - method.drop_hardest
    if left < 2:
        raise ConfigError(
            "method.drop_hardest", f"batch_size {batch_size} gives {mixtures} mixtures x "
            f"{method.components_per_mixture} sources = {embeddings} audio-visual embeddings per "
            f"step; dropping the {method.drop_hardest} hardest negatives leaves {left} of "
            f"{embeddings - 1}, InfoNCE needs at least 2: raise batch_size or lower "
            f"method.drop_hardest")


def load_train_config(path: str | None = None, overrides=(), **values) -> TrainConfig:
    """``TrainConfig`` from a YAML file (a relative path as ``load_config`` reads it) + keyword
    values + ``key=value`` overrides."""
    return load_config(TrainConfig, path, overrides, **values)


def model_config(cfg: TrainConfig) -> ModelConfig:
    """The run's ``ModelConfig`` (read from its path when ``cfg`` was built without loading)."""
    return read_sub_config(ModelConfig, cfg.model, "model")


def method_config(cfg: TrainConfig) -> MethodConfig:
    """The run's ``MethodConfig`` (read from its path when ``cfg`` was built without loading)."""
    return read_sub_config(MethodConfig, cfg.method, "method")


# What of a DeepSpeed JSON is the separator's alone. Its lr scheduler: DeepSpeed's WarmupLR sets
# every parameter group's lr to its ``warmup_max_lr``, so a critic that inherited it would train at
# the separator's lr whatever its own "critic" mapping says (configs/deepspeed/realistic.json's
# critic did, at 1e-3 instead of the 1e-4 it named, until this was found; docs/experiments.md,
# "The critic's learning rate"). Its parameter groups name the separator's modules. The critic
# gets a scheduler only from its own mapping.
SEPARATOR_ONLY = ("scheduler", "param_groups")


def deepspeed_configs(cfg: TrainConfig, world_size: int) -> tuple[dict, dict]:
    """(separator, critic) DeepSpeed config dicts from ``cfg.deepspeed``.

    The batch fields are set from ``batch_size`` (DeepSpeed only uses them for bookkeeping: the
    loop calls ``backward``/``step`` itself). The critic's config is the file's top-level
    ``"critic"`` mapping merged over the rest, less ``SEPARATOR_ONLY``. A scheduler that would
    replace an lr the file names (``check_scheduled_lrs``) is a ``ConfigError``.
    """
    import copy

    from ial.config import merge

    if isinstance(cfg.deepspeed, dict):
        base, path = copy.deepcopy(cfg.deepspeed), "the DeepSpeed config given inline"
    else:
        base, path = read_json_config(cfg.deepspeed, "deepspeed"), cfg.deepspeed
    critic_part = base.pop("critic", {})
    base.pop("comment", None)
    base["train_micro_batch_size_per_gpu"] = cfg.batch_size
    base["gradient_accumulation_steps"] = 1
    base["train_batch_size"] = cfg.batch_size * world_size
    base.setdefault("steps_per_print", 10**9)
    critic = merge({k: v for k, v in base.items() if k not in SEPARATOR_ONLY}, critic_part)
    check_scheduled_lrs(base, "", str(path))
    check_scheduled_lrs(critic, "critic.", str(path))
    return base, critic


def check_scheduled_lrs(ds: dict, prefix: str, path: str) -> None:
    """Refuse a scheduler with one ``warmup_max_lr`` (WarmupLR, WarmupDecayLR) in ``ds`` when an
    lr the config names differs from it: DeepSpeed would replace that lr with it, silently.
    ``prefix``: where ``ds``'s fields are in the file ("" or "critic.")."""
    peak = scheduled_peak_lr(ds)
    if peak is None:
        return
    named = {"optimizer.params.lr": ((ds.get("optimizer") or {}).get("params") or {}).get("lr")}
    named.update({f"param_groups.{name}.lr": group.get("lr")
                  for name, group in (ds.get("param_groups") or {}).items()})
    for name, lr in named.items():
        if lr is not None and float(lr) != peak:
            raise ConfigError("deepspeed", f"{path}: its {prefix}scheduler "
                              f"{ds['scheduler'].get('type')} sets every parameter group's lr to "
                              f"its warmup_max_lr {peak:g}, so {prefix}{name} "
                              f"{float(lr):g} would never be used: make them equal")


def scheduled_peak_lr(ds: dict) -> float | None:
    """The one lr that the scheduler of DeepSpeed config ``ds`` gives every parameter group (the
    ``warmup_max_lr`` of WarmupLR, WarmupDecayLR), or None: no such scheduler, or one value per
    group (the user's own order)."""
    peak = ((ds.get("scheduler") or {}).get("params") or {}).get("warmup_max_lr")
    return None if peak is None or isinstance(peak, (list, tuple)) else float(peak)
