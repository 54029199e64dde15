"""``ial separate``: separate the sounds of your own video(s) with a trained checkpoint.

Each video is featurized exactly as the training data was (``preprocessing.featurize.
featurize_clip`` with the featurize config of the checkpoint's lineage, see
``featurize_config_for``), in 10-s clips as the model was trained on (``clip_starts``): each
clip's audio at 11025 Hz and its K frames through the frozen ResNet-18, the clip's visual
features the query for its sound. The whole soundtrack is separated clip by clip, neighbours
sharing 1 s where their stems are cross-faded (a video up to 10 s long is one clip, its audio
zero-padded; with several videos, the shortest sets the length; ``seconds`` takes only the
first seconds).

- **Several videos** (``a.mp4 b.mp4``): their audios are summed into one mixture and separated
  with each video's visual features as the query for its source → ``a.wav``, ``b.wav`` (one stem
  per given video), plus ``mixture.wav``. This is the mix-and-separate test on your own data.
- **One video**: the model has one visual query per video (the current separators take one
  pooled visual map per source; they do not find several objects in one picture), so one video
  gives the model's estimate of its on-screen source → ``<name>.wav``, and the rest of the
  soundtrack → ``<name>_residual.wav`` (mixture − estimate), plus ``mixture.wav``.

Every run also writes ``spectrogram.png`` (log-frequency spectrograms of the mixture and every
stem) and ``separation.json`` (what was done). WAVs are float32 @ 11025 Hz. ``out_dir`` may be
local or ``s3://``; each file is written atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import tempfile
import warnings
from typing import Callable

import numpy as np
import torch

from ial.errors import UserError
from ial.signal import CLIP_SAMPLES, CLIP_SECONDS, SAMPLE_RATE, SILENCE_DBFS
from ial.storage import Storage, exists, join, local_copy, upload_file


class SeparateError(UserError):
    """A video ``ial separate`` cannot use (missing, unreadable, no audio/video, too short)."""


def check_video(path: str, frame_times: list[float], source: str | None = None) -> float | None:
    """Raise SeparateError naming the video (``source``, where it came from, else ``path``) and
    what is needed, unless ``path`` (a local file) is a readable video with an audio stream and
    a video stream that reaches the last frame time (s) of the featurizer. Returns its duration
    (s; None when ffmpeg does not say)."""
    from ial.media import probe_media

    name = source or path
    if os.path.isdir(path):
        raise SeparateError(f"{name}: is a directory, not a video file")
    info = probe_media(path)
    if not (info["has_audio"] or info["has_video"]):
        raise SeparateError(f"{name}: not a video ffmpeg can read ({info.get('error')}); give a "
                            f"video file with sound (mp4, mkv, webm, ...)")
    if not info["has_audio"]:
        raise SeparateError(f"{name}: has no audio stream; ial separate separates a video's "
                            f"soundtrack, so the video needs sound")
    if not info["has_video"]:
        raise SeparateError(f"{name}: has no video stream (audio only); the video's frames at "
                            f"{', '.join(f'{t:g}' for t in frame_times)} s are the visual query "
                            f"for its sound")
    last = max(frame_times)
    if info["duration"] is not None and info["duration"] <= last:
        raise SeparateError(f"{name}: is {info['duration']:.2f} s long; the checkpoint's "
                            f"featurizer takes frames at {', '.join(f'{t:g}' for t in frame_times)}"
                            f" s, so the video must be longer than {last:g} s")
    return info["duration"]


# s of audio two neighbouring clips share: their stems are cross-faded there (no step at a join)
OVERLAP_S = 1.0


def clip_starts(seconds: float | None) -> list[float]:
    """Where the 10-s clips (``CLIP_SECONDS``, as the model was trained on) that cover
    ``seconds`` of video start, in s: every 9 s, so neighbours share ``OVERLAP_S``, and a last
    one that ends where the video does. Up to one clip (or unknown): one clip from 0."""
    if seconds is None or seconds <= CLIP_SECONDS:
        return [0.0]
    hop = CLIP_SECONDS - OVERLAP_S
    starts = [i * hop for i in range(int((seconds - CLIP_SECONDS) // hop) + 1)]
    if (seconds - starts[-1] - CLIP_SECONDS) * SAMPLE_RATE >= 1:
        starts.append(seconds - CLIP_SECONDS)
    return starts


def crossfade(estimates: list[np.ndarray], starts: list[float], samples: int) -> np.ndarray:
    """The clips' estimates joined: each weighted 1, with a linear ramp over ``OVERLAP_S`` where
    it meets a neighbour, and the weights normalised; where two clips overlap for longer (the
    last one), their estimates are averaged. Shape: each (N, 110250) → (N, samples)."""
    fade = round(OVERLAP_S * SAMPLE_RATE)
    ramp = np.linspace(0.0, 1.0, fade + 2, dtype=np.float32)[1:-1]  # > 0: every sample counts
    total = np.zeros((estimates[0].shape[0], samples), dtype=np.float32)
    weight = np.zeros(samples, dtype=np.float32)
    for k, (est, start) in enumerate(zip(estimates, starts)):
        w = np.ones(est.shape[1], dtype=np.float32)
        if k > 0:
            w[:fade] = ramp
        if k < len(starts) - 1:
            w[-fade:] = ramp[::-1]
        begin = round(start * SAMPLE_RATE)
        n = min(est.shape[1], samples - begin)
        total[:, begin:begin + n] += est[:, :n] * w[:n]
        weight[begin:begin + n] += w[:n]
    return total / weight


def featurize_config_for(meta: dict):
    """The ``FeaturizeConfig`` the checkpoint's training shards were made with, and where it came
    from: lineage ``featurize_config`` / ``configs.featurize`` (a mapping), else the metadata of
    the first shard in lineage ``shards``, else the defaults (said in the returned source)."""
    from ial.config import ConfigError, from_dict
    from preprocessing.featurize.config import FeaturizeConfig
    from preprocessing.shards import read_shard_metadata

    lineage = meta.get("lineage") or {}
    candidates = [("lineage.featurize_config", lineage.get("featurize_config"))]
    configs = lineage.get("configs")
    if isinstance(configs, dict):
        candidates.append(("lineage.configs.featurize", configs.get("featurize")))
    shards = lineage.get("shards") or []
    if shards and isinstance(shards, list) and isinstance(shards[0], str):
        candidates.append((shards[0], lambda: read_shard_metadata(shards[0]).get("config")))
    for source, value in candidates:
        if callable(value):
            try:
                value = value()
            except Exception:  # noqa: BLE001 - a shard that moved away: try the next source
                value = None
        if isinstance(value, dict):
            known = {f for f in FeaturizeConfig.__dataclass_fields__}
            try:
                fields = {k: v for k, v in value.items() if k in known}
                return from_dict(FeaturizeConfig, fields), source
            except ConfigError:
                continue
    return FeaturizeConfig(), "defaults (the checkpoint's lineage names no featurize config)"


def peak_dbfs(wave: np.ndarray) -> float:
    """The peak level of ``wave`` (samples in [-1, 1]) in dBFS; -inf for digital silence."""
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    return 20.0 * float(np.log10(peak)) if peak > 0 else float("-inf")


def _separate_clip(model, meta: dict, paths: list[str], audio: np.ndarray, fcfg, backbone,
                   start: float, device: str, checkpoint: str) -> np.ndarray:
    """Mix the clips' ``audio`` and separate it, each video's frames of the 10 s from ``start``
    (s), featurized as the training data was, the query for its own sound. Returns the
    estimates, float32. Shape: audio (N, 110250) → (N, 110250), N = len(paths)."""
    from ial.separate.waveforms import separate_waveforms, training_window
    from preprocessing.featurize.features import featurize_clip

    clips = [featurize_clip(p, fcfg, backbone, start=start) for p in paths]
    model_cfg = meta.get("model_cfg")
    problem = model_cfg and model_cfg.feature_channels_problem(
        clips[0]["frame_features"].shape[1])
    if problem:
        raise SeparateError(f"checkpoint {checkpoint}: {problem} (the featurizer's)")
    mixture = torch.from_numpy(np.ascontiguousarray(audio.sum(axis=0), dtype=np.float32))
    visual = np.stack([_visual(c, model_cfg) for c in clips])[None]
    with torch.no_grad():
        return separate_waveforms(model, mixture[None].to(device),
                                  torch.from_numpy(visual).to(device),
                                  window=training_window(meta))[0].cpu().numpy()


def _visual(clip: dict, model_cfg) -> np.ndarray:
    """A featurized video's visual input: its frame features, or (a model that takes frames
    through its own trunk) its JPEG frames decoded and ImageNet-normalised. float32."""
    if getattr(model_cfg, "visual_input", "features") == "frames":
        from ial.models.resnet18 import imagenet_normalize
        from preprocessing.frames import decode_jpeg

        return imagenet_normalize(np.stack([decode_jpeg(f) for f in clip["frames"]])).numpy()
    return clip["frame_features"].astype(np.float32)


def _stem_names(paths: list[str]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = posixpath.splitext(posixpath.basename(p.rstrip("/")))[0] or "video"
        base = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in base)
        name, k = base, 2
        while name in names or name in ("mixture", "spectrogram", "separation"):
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def _plot(path: str, waves: dict[str, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ial.signal import log_magnitude

    specs = {n: 20 * np.log10(np.maximum(log_magnitude(torch.as_tensor(w)).numpy(), 1e-5))
             for n, w in waves.items()}
    vmax = max(float(s.max()) for s in specs.values())
    fig, axes = plt.subplots(len(specs), 1, figsize=(8, 2.2 * len(specs)), dpi=80, squeeze=False)
    for ax, (name, spec) in zip(axes[:, 0], specs.items()):
        ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=vmax - 80, vmax=vmax)
        ax.set_title(f"{name} (log-frequency, dB)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def separate_videos(paths: list[str], checkpoint: str, out_dir: str, device: str = "auto",
                    seconds: float | None = None, progress: bool = False,
                    fetch: Callable[[str], str] | None = None) -> dict:
    """Separate ``paths`` (local or s3:// videos) with ``checkpoint``; write stems to ``out_dir``.
    ``fetch``: the local copy of a video given as an http(s) URL, called once the checkpoint
    has loaded (``ial separate`` passes a yt-dlp download); errors and ``separation.json`` name
    the URL. Without it, a URL is a file that is not found.

    The whole soundtrack (the shortest video's, with several) or its first ``seconds`` s, in
    overlapping 10-s clips (``clip_starts``), each clip's frames the query for its own sound,
    their stems cross-faded (``crossfade``); ``progress``: a bar over the clips.

    Returns ``{"mixture": url, "stems": {name: url}, "spectrogram": url, "report": url,
    "mode": "per-video" | "single", "featurize_config": source, "model_name": str,
    "seconds": s separated, "clips": [start of each clip, s],
    "silent": [stem names of videos whose soundtrack peaks at or below SILENCE_DBFS]}``.
    """
    import soundfile as sf
    from tqdm.auto import tqdm

    from ial.models.export import load_model
    from preprocessing.featurize.clip_decode import decode_media
    from preprocessing.featurize.features import load_backbone

    if not paths:
        raise SeparateError("give at least one video")
    if seconds is not None and seconds <= 0:
        raise SeparateError(f"--seconds must be > 0, got {seconds:g}")
    from ial.runtime import torch_device

    model, meta = load_model(checkpoint, map_location="cpu")
    device = torch_device(device, "--device")
    model = model.to(device).eval()
    fcfg, fsource = featurize_config_for(meta)
    sources = list(paths)
    if fetch is not None:
        paths = [fetch(p) if p.startswith(("http://", "https://")) else p for p in paths]
    for path, source in zip(paths, sources):
        if not exists(path):
            raise SeparateError(f"{source}: file not found")
    with contextlib.ExitStack() as stack:  # an s3:// video is downloaded once: probe, decode
        local = [stack.enter_context(local_copy(p)) for p in paths]
        lengths = [check_video(v, list(fcfg.frame_times), s) for v, s in zip(local, sources)]
        Storage(out_dir).check(what="--out")  # made only for videos it can use, before the work
        backbone, weights = load_backbone(fcfg)
        if str(weights).startswith("none"):
            warnings.warn("the visual backbone has random weights (no visual_weights in the "
                          "featurize config): stems are only meaningful if the model was trained "
                          "on the same")
        known = [d for d in lengths if d is not None] + ([seconds] if seconds else [])
        length = min(known) if known else None
        starts = clip_starts(length)
        # the soundtracks decoded once, whole: each clip's audio is a slice of them (a decode
        # from a seek point resamples with another phase)
        total = round(starts[-1] * SAMPLE_RATE) + CLIP_SAMPLES
        tracks = np.stack([decode_media(v, list(fcfg.frame_times)[:1], 16, total)[0]
                           for v in local])  # (N, samples); one small frame comes along, unused
        estimates = []
        for start in tqdm(starts, desc="separate", unit="clip",
                          disable=not progress or len(starts) == 1):
            clip = tracks[:, round(start * SAMPLE_RATE):][:, :CLIP_SAMPLES]
            estimates.append(_separate_clip(model, meta, local, clip, fcfg, backbone, start,
                                            device, checkpoint))
    samples = round(length * SAMPLE_RATE) if length is not None else CLIP_SAMPLES
    audio, est = tracks[:, :samples], crossfade(estimates, starts, samples)
    names = _stem_names(paths)
    # Named in the result (the CLI prints them); their stems are still written: mixed with
    # other videos, the others' stems are real separations.
    silent = [n for n, wave in zip(names, audio) if peak_dbfs(wave) <= SILENCE_DBFS]
    mixture = audio.sum(axis=0)
    stems = {n: est[i] for i, n in enumerate(names)}
    mode = "per-video" if len(paths) > 1 else "single"
    if mode == "single":
        stems[f"{names[0]}_residual"] = mixture - est[0]

    out_dir = out_dir.rstrip("/")
    result: dict = {"mode": mode, "featurize_config": fsource, "visual_weights": weights,
                    "model_name": meta.get("model_name"), "checkpoint": checkpoint,
                    "videos": sources, "sample_rate": SAMPLE_RATE, "silent": silent,
                    "seconds": round(mixture.size / SAMPLE_RATE, 3),
                    "clips": starts, "stems": {}}
    with tempfile.TemporaryDirectory(prefix="ial-separate-") as tmp:
        files = {"mixture": "mixture.wav", **{n: f"{n}.wav" for n in stems}}
        sf.write(os.path.join(tmp, "mixture.wav"), mixture, SAMPLE_RATE, subtype="FLOAT")
        for name, wave in stems.items():
            sf.write(os.path.join(tmp, files[name]), wave.astype(np.float32), SAMPLE_RATE,
                     subtype="FLOAT")
        _plot(os.path.join(tmp, "spectrogram.png"), {"mixture": mixture, **stems})
        result["mixture"] = join(out_dir, "mixture.wav")
        result["stems"] = {n: join(out_dir, files[n]) for n in stems}
        result["spectrogram"] = join(out_dir, "spectrogram.png")
        result["report"] = join(out_dir, "separation.json")
        with open(os.path.join(tmp, "separation.json"), "w") as f:
            json.dump(result, f, indent=1)
        for rel in [*files.values(), "spectrogram.png", "separation.json"]:
            upload_file(os.path.join(tmp, rel), join(out_dir, rel))
    return result
