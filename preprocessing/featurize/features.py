"""Features of one clip (and of a batch of decoded clips), exactly as the shards store them.

- ``decode_clip``: one ffmpeg process (``clip_decode``) gives the audio (padded/trimmed to 110250
  samples @ 11025 Hz) and K frames (JPEG-encoded, then decoded again so features recomputed from
  the stored frames match);
- ``compute_features``: the STFT (``ial.signal.log_magnitude``) and the frozen ResNet-18 trunk
  (``load_backbone``, built once per process) over a whole batch;
- ``featurize_clip``: both, for one clip (``ial separate`` featurizes a user's video this way);
- ``prepare_worker``: what a worker process does before its first clip.
"""
from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from ial.signal import CLIP_SAMPLES
from ial.storage import local_copy
from preprocessing.featurize.clip_decode import decode_media
from preprocessing.featurize.config import FeaturizeConfig
from preprocessing.frames import decode_jpeg, encode_jpeg

_BACKBONES: dict[tuple, tuple[Any, str]] = {}
# Two shard tasks of one Dask worker, ``client.run`` beside a task or Prefect's thread runner may
# ask at once: one process-wide lock builds each trunk once per process.
_BACKBONES_LOCK = threading.Lock()


def load_backbone(cfg: FeaturizeConfig):
    """The frozen ResNet-18 trunk for ``cfg`` and its weights description, cached per process
    (built once, under a lock, so concurrent callers share one trunk). On CPU with
    ``cfg.optimize_inference`` it is the ``InferenceTrunk`` (BN folded, channels-last, Winograd
    3x3 convs: ~2.3x faster on CPU, outputs within ~1e-5 of eager), else the eager trunk; on a
    CUDA device (``cfg.device``: auto picks one when visible) the eager trunk on that device."""
    from ial.models.resnet18 import InferenceTrunk, build_trunk

    from ial.runtime import torch_device

    device = torch_device(cfg.device, "featurize device")
    key = (cfg.visual_weights, cfg.dilate_layer4, cfg.seed, cfg.optimize_inference, device)
    with _BACKBONES_LOCK:
        if key not in _BACKBONES:
            model, description = build_trunk(cfg.visual_weights, cfg.dilate_layer4, cfg.seed)
            if device != "cpu":  # the InferenceTrunk's Winograd kernels are CPU code
                trunk = model.to(device)
            else:
                trunk = InferenceTrunk(model) if cfg.optimize_inference else model
            _BACKBONES[key] = (trunk, description)
        return _BACKBONES[key]


def backbone_device(backbone):
    """The device a trunk's weights are on (where its input must go)."""
    import itertools

    return next(itertools.chain(backbone.parameters(), backbone.buffers())).device


# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_tensor_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Let this process reuse freed heap pages for its per-batch tensors (glibc only).

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; setting that variable
    turns off glibc's adaptive mmap threshold, so every tensor over 128 KiB is mmap'd and its
    pages faulted in again on every batch: the ResNet ran ~10% slower and the Winograd trunk
    lost its whole gain (~0.08 s per clip). A fixed mmap threshold (32 MiB, glibc's maximum) and
    a 256 MiB trim threshold keep the pages; peak RSS stays flat in the number of clips.
    Returns False where mallopt is unavailable (not glibc): then nothing changes.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
                and mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def prepare_worker(cfg: FeaturizeConfig):
    """Set this process up for featurizing (torch threads, ``keep_tensor_memory``) and return
    ``load_backbone(cfg)``: what a shard task does before its first clip."""
    import torch

    torch.set_num_threads(cfg.torch_threads)
    keep_tensor_memory()
    return load_backbone(cfg)


def decode_clip(path: str, cfg: FeaturizeConfig, start: float = 0.0) -> dict:
    """Decode one clip (local path or URL): audio, JPEG frames and the decoded JPEG pixels;
    ``start`` (s): the 10 s from there of a longer video (``ial separate``'s sections).

    Returns ``audio`` (110250,) float32, ``audio_pad`` (samples), ``frames`` K JPEG bytes,
    ``pixels`` (K, S, S, 3) uint8 (decoded from the JPEGs), ``frame_times`` (s).
    """
    with local_copy(path) as local:
        if not os.path.exists(local):
            raise FileNotFoundError(f"clip file not found: {path}")
        audio, pad, raw = decode_media(local, list(cfg.frame_times), cfg.frame_size,
                                       CLIP_SAMPLES, start=start)
    jpegs = [encode_jpeg(f, cfg.jpeg_quality) for f in raw]
    pixels = np.stack([decode_jpeg(j) for j in jpegs])
    return {"audio": audio, "audio_pad": pad, "frames": jpegs, "pixels": pixels,
            "frame_times": [float(t) for t in cfg.frame_times]}


def compute_features(decoded: list[dict], backbone, low_level: bool = False) -> None:
    """Add ``spec`` (256, T) float32 and ``frame_features`` (K, 512, h, w) float32 to each decoded
    clip, running the STFT and the ResNet once over the whole batch. Drops ``pixels``.

    ``low_level``: the layer-2 map too, packed after the layer-4 channels (space-to-depth to the
    layer-4 size, ``ial.models.visual_heads.pack_low_level``): (K, 512 + 128·r², h, w), the input
    of the authors' DeepLab visual head."""
    import torch

    from ial.models.resnet18 import imagenet_normalize
    from ial.models.visual_heads import pack_low_level
    from ial.signal import log_magnitude

    if not decoded:
        return
    with torch.inference_mode():
        waves = torch.from_numpy(np.stack([d["audio"] for d in decoded]))
        specs = log_magnitude(waves).numpy()  # (B, 256, T)
        pixels = np.concatenate([d["pixels"] for d in decoded])  # (B*K, S, S, 3)
        out = backbone(imagenet_normalize(pixels).to(backbone_device(backbone)),
                       low_level=low_level)
        feats = (pack_low_level(*out) if low_level else out).float().cpu().numpy()  # (B*K,C,h,w)
    k = decoded[0]["pixels"].shape[0]
    for i, d in enumerate(decoded):
        d["spec"] = specs[i]
        d["frame_features"] = feats[i * k:(i + 1) * k]
        del d["pixels"]


def featurize_clip(path: str, cfg: FeaturizeConfig, backbone=None, start: float = 0.0) -> dict:
    """All features of one clip, exactly as the shards store them (before float16/int16).

    Returns ``audio`` (110250,) float32 samples @ 11025 Hz, ``audio_pad`` (samples padded >0 /
    trimmed <0), ``spec`` (256, T=431) float32, ``frames`` K JPEG bytes, ``frame_times`` (s),
    ``frame_features`` (K, 512, S/16, S/16) float32. ``backbone``: a ResNet18Trunk (default: the
    one ``cfg`` describes). ``start`` (s): the clip is the 10 s from there (``decode_clip``).
    """
    if backbone is None:
        backbone, _ = load_backbone(cfg)
    clip = decode_clip(path, cfg, start)
    compute_features([clip], backbone, cfg.low_level_features)
    return clip
