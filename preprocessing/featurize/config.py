"""``FeaturizeConfig``: what featurization computes and how it is run (YAML: configs/featurize/).

Content fields (they change what a shard holds) are hashed into ``config_hash``; run fields
(root, Dask address, worker counts, batch sizes) are not, so re-running on a different cluster
reuses the shards already written.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import yaml

from ial.config import ConfigError, to_dict
from ial.signal import CLIP_SECONDS

# Bump when the bytes a shard holds for the same clip and config change.
FEATURIZER_VERSION = "1.0.0"

# Fields that do not change shard content (excluded from the config hash).
RUN_FIELDS = ("root", "dask_address", "n_workers", "threads_per_worker", "torch_threads",
              "batch_clips", "row_group_clips", "clips_per_shard", "retries", "optimize_inference",
              "device")


@dataclass
class FeaturizeConfig:
    """Featurization of the ``ok`` clips of one dataset into Parquet shards.

    Frames: DESIGN.md leaves K open. K = 3 frames at 2.5 / 5.0 / 7.5 s, the quartile points of the
    10 s clip: SoP/IAL use 3 frames per clip; evenly spaced times away from the clip edges (where
    cuts and fades sit) cover the whole clip, so any ~5.94 s training window has a frame inside
    it, and fixed times make shards deterministic.
    """

    root: str = "./data"  # storage root (local dir or s3://bucket/prefix)
    dataset: str = "vggsound"
    splits: list[str] | None = None  # only these splits of the clip index (None: all)
    clips_per_shard: int = 512  # rows per Parquet shard
    row_group_clips: int = 32  # rows per Parquet row group (memory per worker ~ this)
    batch_clips: int = 8  # clips whose frames go through the ResNet together
    num_frames: int = 3  # K
    frame_times: list[float] = field(default_factory=lambda: [2.5, 5.0, 7.5])  # s into the clip
    frame_size: int = 224  # px: scale short side to this, centre crop square
    jpeg_quality: int = 90
    dilate_layer4: bool = True  # output stride 16 (SoP/IAL); False: stride 32
    # Also store the layer-2 map (stride 8), packed after the layer-4 channels by space-to-depth
    # (frame features (K, 512 + 512, h, w) with the dilated trunk): what the authors' DeepLab
    # visual head (model visual_head: deeplab, low_level_channels: 512) fuses. Doubles the
    # features' size.
    low_level_features: bool = False
    visual_weights: str | None = None  # torchvision resnet18 .pth; None: seeded random init
    seed: int = 0  # random-init seed of the trunk when no weights are given
    dask_address: str | None = None  # running scheduler (tcp://host:8786); None: LocalCluster
    n_workers: int = 2  # LocalCluster worker processes
    threads_per_worker: int = 1  # Dask threads per worker (one shard task at a time each)
    torch_threads: int = 1  # torch intra-op threads inside a worker
    # InferenceTrunk: BN folded + Winograd convs, ~2.3x eager on CPU
    optimize_inference: bool = True
    retries: int = 2  # Dask/Prefect retries of a shard task that raised
    # Where the ResNet runs: auto = a CUDA device when the worker sees one, else CPU. Not part of
    # the hash: CUDA and CPU features agree to float tolerance (benchmarks/gpu_check.sh).
    device: str = "auto"

    def validate(self) -> None:
        if self.clips_per_shard < 1:
            raise ConfigError("clips_per_shard", "must be >= 1")
        for name in ("row_group_clips", "batch_clips", "n_workers", "threads_per_worker",
                     "torch_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be >= 1")
        if self.num_frames < 1:
            raise ConfigError("num_frames", "must be >= 1")
        if len(self.frame_times) != self.num_frames:
            raise ConfigError("frame_times", f"has {len(self.frame_times)} times but "
                              f"num_frames is {self.num_frames}")
        for i, t in enumerate(self.frame_times):
            if not 0.0 <= t < CLIP_SECONDS:
                raise ConfigError(f"frame_times[{i}]",
                                  f"{t} s is outside the {CLIP_SECONDS} s clip")
        if list(self.frame_times) != sorted(set(self.frame_times)):
            raise ConfigError("frame_times", f"must be strictly ascending, got {self.frame_times}")
        stride = 16 if self.dilate_layer4 else 32
        if self.frame_size < stride or self.frame_size % stride:
            raise ConfigError("frame_size", f"must be a positive multiple of the output stride "
                              f"{stride}, got {self.frame_size}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError("jpeg_quality", "must be in 1..100")
        if self.retries < 0:
            raise ConfigError("retries", "must be >= 0")


def content_dict(cfg: FeaturizeConfig) -> dict:
    """The fields that determine shard content, plus the featurizer version. ``visual_weights``
    is identified by the file's sha256 (not its path), or ``random-init`` + seed."""
    data = {k: v for k, v in to_dict(cfg).items() if k not in RUN_FIELDS}
    if not cfg.low_level_features:  # added later: shards made before it keep their hash
        data.pop("low_level_features")
    if cfg.visual_weights:
        from ial.storage import sha256

        try:
            data["visual_weights"] = "sha256:" + sha256(cfg.visual_weights)
        except FileNotFoundError:
            raise ConfigError("visual_weights", f"file not found: {cfg.visual_weights}") from None
    else:
        data["visual_weights"] = f"random-init seed {cfg.seed}"
    data["featurizer_version"] = FEATURIZER_VERSION
    return data


def config_hash(cfg: FeaturizeConfig) -> str:
    """sha256 (hex) of the canonical YAML (sorted keys) of ``content_dict(cfg)``."""
    text = yaml.safe_dump(content_dict(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def replace(cfg: FeaturizeConfig, **changes) -> FeaturizeConfig:
    new = dataclasses.replace(cfg, **changes)
    new.validate()
    return new
