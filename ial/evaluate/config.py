"""``EvalConfig``: what ``ial.evaluate`` scores and where it writes (YAML: ``configs/eval/``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ial.config import ConfigError
from ial.evaluate.metrics import CLAMP_DB, SILENT_DB
from ial.signal import N_FFT


@dataclass
class EvalConfig:
    """The MUSIC-style evaluation of one checkpoint on one shards dataset (docs/evaluation.md)."""

    checkpoint: str = ""  # model.pt URL (local path or s3://...), as written by ial.training
    data: str = ""  # shards dataset dir: <root>/shards/<dataset> (local or s3://)
    split: str = "test"  # which split of the shards is evaluated
    mix: int = 2  # sources per mixture: 2 = all pairs of distinct classes, 3 = all triplets
    n_per_combination: int = 10  # mixtures drawn per class combination (fixed seed)
    seed: int = 1234  # the protocol's seed: same data + seed = same list of mixtures
    max_mixtures: int | None = None  # keep a seeded subset of this many mixtures (None: all)
    # Baseline rows scored on the same mixtures besides the model (and the mixture itself, always):
    # oracle_irm / oracle_ibm on the model's own 256-bin log-frequency grid; oracle_irm_linear on
    # the plain 512-bin linear STFT.
    oracles: list[str] = field(default_factory=lambda: ["oracle_irm", "oracle_ibm"])
    out: str | None = None  # report dir (local or s3://); None: <root>/reports/<run name>/
    num_examples: int = 3  # mixtures with spectrogram/mask figures and WAV stems in the report
    batch_size: int = 4  # mixtures separated together
    # Sliding window over the 10-s clips: its length in samples (None: the window the checkpoint
    # was trained on, ``ial.separate.waveforms.training_window``; 65535, the authors', for an
    # export that does not record it), hop in samples (the authors' 2205; null: half a window,
    # 4x faster) and whether overlaps are cross-faded with a Hann taper (ours) or averaged (the
    # authors'). On the demo's validation split hop 2205 gave +0.17 dB SDR over half a window,
    # the taper +0.09 dB more (docs/model.md).
    window: int | None = None
    window_hop: int | None = 2205
    window_taper: bool = True
    device: str = "auto"  # torch device of the model: auto (CUDA when visible), cpu, cuda:1
    silent_db: float = SILENT_DB  # dBFS: a mixture with a reference below this is skipped
    clamp_db: float = CLAMP_DB  # scores are clipped to ±clamp_db dB (inf/NaN cases)
    # A killed run's scored batches (<out>/.partial/, saved about once a minute) are reused by
    # the next run with the same checkpoint and settings (ial.evaluate.partial); false: all anew.
    resume: bool = True

    def validate(self) -> None:
        from ial.evaluate.oracle import ORACLES

        if not self.checkpoint:
            raise ConfigError("checkpoint", "is required (a model.pt URL)")
        if not self.data:
            raise ConfigError("data", "is required (a shards dataset dir, e.g. ./data/shards/demo)")
        if self.mix < 2:
            raise ConfigError("mix", f"must be >= 2 sources per mixture, got {self.mix}")
        if self.window is not None and self.window < N_FFT:
            raise ConfigError("window", f"must be >= {N_FFT} samples (one STFT frame), or null: "
                              "the checkpoint's training window")
        if self.window_hop is not None and self.window_hop < 1:
            raise ConfigError("window_hop", "must be >= 1 sample (or null: half a window)")
        for name in ("n_per_combination", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be >= 1")
        if self.max_mixtures is not None and self.max_mixtures < 1:
            raise ConfigError("max_mixtures", "must be >= 1 (or null for all)")
        if self.num_examples < 0:
            raise ConfigError("num_examples", "must be >= 0")
        for i, name in enumerate(self.oracles):
            if name not in ORACLES:
                raise ConfigError(f"oracles[{i}]", f"unknown oracle {name!r}; known: "
                                  f"{', '.join(ORACLES)}")
        if self.clamp_db <= 0:
            raise ConfigError("clamp_db", "must be positive")
