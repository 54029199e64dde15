"""A generated audio-visual corpus for the demo and the tests (mp4 files + a VGGSound-style CSV).

Four sound classes whose sound *and* look identify the class:

=========  ==============================================  ================================
class      sound                                           picture
=========  ==============================================  ================================
violin     sawtooth-like harmonics + vibrato, 400–900 Hz   red circle moving on an ellipse
flute      near-sine, weak odd harmonics + breath, 0.8–1.7 kHz  blue horizontal bar moving up/down
bass       rich low harmonics, 70–200 Hz                   green square moving left/right
drum       periodic filtered-noise bursts (broadband)      yellow triangle pulsing with the hits
=========  ==============================================  ================================

Every file is longer than a clip (default 13 s) and the manifest's ``start_seconds`` is a small
offset (1 or 2 s), so ingest has to cut exact sections. Each file is written by ONE ffmpeg
process: raw RGB frames on stdin, audio from a temporary WAV, encoded as H.264 (+faststart) and
AAC. Everything is seeded and deterministic.

API::

    info = generate_corpus("/tmp/corpus", videos_per_class=20)   # videos/<id>.mp4 + vggsound.csv
    wave = synthesize_audio("violin", seconds=10.0, sample_rate=11025, seed=3)  # (L,) float32
    make_video(path, frames, fps=10, audio=wave, sample_rate=11025)  # audio=None: no audio stream
    truncate_file(path, 0.5)                                          # a corrupt (cut) mp4
"""

from __future__ import annotations

import csv
import dataclasses
import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from ial.media import ffmpeg_binary

CLASSES = ("violin", "flute", "bass", "drum")
DEFAULT_SAMPLE_RATE = 22050  # Hz
DEFAULT_FPS = 10
DEFAULT_SIZE = (320, 240)  # (width, height) px
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


@dataclasses.dataclass(frozen=True)
class CorpusEntry:
    video_id: str
    start_seconds: float  # where the clip starts in the video (s)
    label: str
    split: str
    path: str  # local path of the mp4


@dataclasses.dataclass
class CorpusInfo:
    out_dir: str
    videos_dir: str
    manifest: str  # path of vggsound.csv
    classes: list[str]
    entries: list[CorpusEntry]
    seconds: float  # length of each video (s)
    sample_rate: int  # Hz
    fps: int

    @property
    def num_videos(self) -> int:
        return len(self.entries)

    def by_label(self, label: str) -> list[CorpusEntry]:
        return [e for e in self.entries if e.label == label]


# ----------------------------------------------------------------------------------------- audio

def _envelope(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    env = np.ones(n, np.float64)
    a = min(n, max(1, int(attack * sr)))
    r = min(n - a, max(1, int(release * sr)))
    env[:a] = np.linspace(0.0, 1.0, a)
    if r > 0:
        env[n - r:] = np.linspace(1.0, 0.0, r)
    return env


def _harmonic_note(freq: np.ndarray, sr: int, amps: list[float], phase0: float = 0.0) -> np.ndarray:
    """Sum of harmonics k*f(t) with amplitudes ``amps`` (f may vary: phase is integrated)."""
    phase = phase0 + 2 * np.pi * np.cumsum(freq) / sr
    out = np.zeros_like(phase)
    for k, a in enumerate(amps, start=1):
        if a:
            out += a * np.sin(k * phase)
    return out


def _melody(rng: np.random.Generator, n: int, sr: int, lo: float, hi: float,
            note_s: tuple[float, float], render) -> np.ndarray:
    """Random notes between ``lo`` and ``hi`` Hz (log-uniform), short gaps, until ``n`` samples."""
    out = np.zeros(n, np.float64)
    pos = int(rng.uniform(0.0, 0.05) * sr)
    while pos < n:
        length = min(n - pos, int(rng.uniform(*note_s) * sr))
        if length <= 8:
            break
        f0 = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        out[pos:pos + length] = render(rng, f0, length) * rng.uniform(0.6, 1.0)
        pos += length + int(rng.uniform(0.0, 0.08) * sr)  # short silence gap
    return out


def _violin(rng, n, sr):
    def note(rng, f0, length):
        t = np.arange(length) / sr
        vib = 1.0 + 0.012 * np.sin(2 * np.pi * rng.uniform(5.0, 6.5) * t)
        amps = [1.0 / k for k in range(1, 11)]  # sawtooth-like
        return _harmonic_note(f0 * vib, sr, amps) * _envelope(length, sr, 0.06, 0.08)
    return _melody(rng, n, sr, 400.0, 900.0, (0.3, 0.8), note)


def _flute(rng, n, sr):
    def note(rng, f0, length):
        t = np.arange(length) / sr
        vib = 1.0 + 0.004 * np.sin(2 * np.pi * 4.5 * t)
        tone = _harmonic_note(f0 * vib, sr, [1.0, 0.0, 0.12, 0.0, 0.04])
        breath = np.convolve(rng.standard_normal(length), np.ones(4) / 4, mode="same") * 0.05
        return (tone + breath) * _envelope(length, sr, 0.05, 0.06)
    return _melody(rng, n, sr, 800.0, 1700.0, (0.25, 0.7), note)


def _bass(rng, n, sr):
    def note(rng, f0, length):
        t = np.arange(length) / sr
        amps = [1.0 / k ** 0.7 for k in range(1, 9)]
        decay = np.exp(-t / rng.uniform(0.4, 0.9))
        envelope = _envelope(length, sr, 0.01, 0.05)
        return _harmonic_note(np.full(length, f0), sr, amps) * decay * envelope
    return _melody(rng, n, sr, 70.0, 200.0, (0.3, 0.7), note)


def _drum(rng, n, sr):
    out = np.zeros(n, np.float64)
    period = rng.uniform(0.22, 0.45)  # s between hits
    pos = int(rng.uniform(0.0, 0.1) * sr)
    while pos < n:
        length = min(n - pos, int(0.25 * sr))
        t = np.arange(length) / sr
        noise = rng.standard_normal(length)
        hit = noise * np.exp(-t / rng.uniform(0.03, 0.07))
        thump = np.sin(2 * np.pi * rng.uniform(55, 90) * t) * np.exp(-t / 0.08)
        out[pos:pos + length] += (0.7 * hit + 0.5 * thump) * rng.uniform(0.6, 1.0)
        pos += int(period * sr * rng.uniform(0.8, 1.2))
    return out


_SYNTHS = {"violin": _violin, "flute": _flute, "bass": _bass, "drum": _drum}


def synthesize_audio(label: str, seconds: float, sample_rate: int = DEFAULT_SAMPLE_RATE,
                     seed: int | np.random.Generator = 0) -> np.ndarray:
    """Mono audio of class ``label``. Shape: (round(seconds * sample_rate),) float32, peak ≈ 0.5."""
    if label not in _SYNTHS:
        raise KeyError(f"unknown demo class {label!r}; known: {', '.join(CLASSES)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    wave = _SYNTHS[label](rng, n, sample_rate)
    peak = float(np.max(np.abs(wave))) or 1.0
    return (0.5 * wave / peak).astype(np.float32)


def _drum_pulse(audio: np.ndarray, sample_rate: int, fps: float, n_frames: int) -> np.ndarray:
    """Per-frame loudness in [0, 1] (drives the drum triangle's size). Shape: (n_frames,)."""
    hop = sample_rate / fps
    env = np.zeros(n_frames)
    for i in range(n_frames):
        seg = audio[int(i * hop):int((i + 1) * hop)]
        env[i] = float(np.sqrt(np.mean(seg ** 2))) if seg.size else 0.0
    return env / (env.max() or 1.0)


# ---------------------------------------------------------------------------------------- frames

_COLOURS = {"violin": (220, 30, 30), "flute": (30, 60, 230), "bass": (30, 180, 50),
            "drum": (240, 220, 20)}


def render_frames(label: str, seconds: float, fps: int = DEFAULT_FPS,
                  size: tuple[int, int] = DEFAULT_SIZE, seed: int | np.random.Generator = 0,
                  pulse: np.ndarray | None = None) -> np.ndarray:
    """Frames of class ``label``: a plain background and the class's moving shape.

    Shape: (T, H, W, 3) uint8 RGB with T = round(seconds * fps), (W, H) = ``size``.
    ``pulse`` (T,) in [0, 1] scales the drum triangle (its hits), if given.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    w, h = size
    n = int(round(seconds * fps))
    bg = np.array(rng.integers(90, 170, 3), np.uint8)  # grey-ish, varies per video
    frames = np.empty((n, h, w, 3), np.uint8)
    frames[:] = bg
    yy, xx = np.mgrid[0:h, 0:w]
    colour = np.array(_COLOURS[label], np.uint8)
    speed = rng.uniform(0.3, 0.6)  # Hz
    phase = rng.uniform(0, 2 * np.pi)
    s = min(w, h)
    for i in range(n):
        t = i / fps
        a = 2 * np.pi * speed * t + phase
        if label == "violin":
            cx, cy, r = w / 2 + 0.3 * w * np.cos(a), h / 2 + 0.25 * h * np.sin(a), 0.15 * s
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        elif label == "flute":
            cy = h / 2 + 0.3 * h * np.sin(a)
            mask = (np.abs(yy - cy) <= 0.06 * h) & (np.abs(xx - w / 2) <= 0.35 * w)
        elif label == "bass":
            cx, half = w / 2 + 0.3 * w * np.sin(a), 0.14 * s
            mask = (np.abs(xx - cx) <= half) & (np.abs(yy - h / 2) <= half)
        else:  # drum: a triangle pulsing with the hits
            k = 0.6 + 0.5 * (pulse[i] if pulse is not None and i < len(pulse) else 0.5)
            half = 0.22 * s * k
            cx, cy = w / 2, h / 2
            top, base = cy - half, cy + half
            rel = (yy - top) / max(base - top, 1.0)
            mask = (yy >= top) & (yy <= base) & (np.abs(xx - cx) <= rel * half)
        frames[i][mask] = colour
    return frames


# ----------------------------------------------------------------------------------------- files

def make_video(path: str | os.PathLike, frames: np.ndarray, fps: float = DEFAULT_FPS,
               audio: np.ndarray | None = None, sample_rate: int = DEFAULT_SAMPLE_RATE,
               faststart: bool = True, gop_seconds: float = 2.0) -> str:
    """Encode ``frames`` (T, H, W, 3) uint8 RGB and optional mono ``audio`` (L,) float in [-1, 1]
    at ``sample_rate`` Hz into an mp4 (H.264 + AAC) with one ffmpeg process.

    ``audio=None`` writes a file with no audio stream (for tests). The file appears atomically.
    """
    path = str(path)
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape}")
    _, h, w, _ = frames.shape
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp_out = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}.mp4")
    wav = None
    try:
        cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps),
               "-i", "pipe:0"]
        if audio is not None:
            fd, wav = tempfile.mkstemp(suffix=".wav", prefix="ial-corpus-")
            os.close(fd)
            sf.write(wav, np.asarray(audio, np.float32), sample_rate, subtype="PCM_16")
            cmd += ["-i", wav]
        cmd += ["-map", "0:v"] + (["-map", "1:a"] if audio is not None else [])
        cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                "-g", str(max(1, int(round(gop_seconds * fps)))), "-threads", "1"]
        if audio is not None:
            cmd += ["-c:a", "aac", "-b:a", "64k", "-ac", "1", "-shortest"]
        if faststart:
            cmd += ["-movflags", "+faststart"]
        cmd += ["-f", "mp4", tmp_out]
        proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed writing {path}: "
                               f"{proc.stderr.decode('utf-8', 'replace').strip()[-500:]}")
        os.replace(tmp_out, path)
    finally:
        if wav:
            os.unlink(wav)
        if os.path.exists(tmp_out):
            os.unlink(tmp_out)
    return path


def truncate_file(path: str | os.PathLike, keep_fraction: float) -> str:
    """Cut a file to its first ``keep_fraction`` of bytes in place (a corrupt/truncated mp4)."""
    path = str(path)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep_fraction))
    return path


def make_class_video(path: str | os.PathLike, label: str, seconds: float, seed: int = 0,
                     fps: int = DEFAULT_FPS, sample_rate: int = DEFAULT_SAMPLE_RATE,
                     size: tuple[int, int] = DEFAULT_SIZE, with_audio: bool = True) -> str:
    """One demo video of class ``label`` (``seconds`` long), deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    audio = synthesize_audio(label, seconds, sample_rate, rng)
    n_frames = int(round(seconds * fps))
    pulse = _drum_pulse(audio, sample_rate, fps, n_frames) if label == "drum" else None
    frames = render_frames(label, seconds, fps, size, rng, pulse)
    return make_video(path, frames, fps, audio if with_audio else None, sample_rate)


def video_id(rng: np.random.Generator) -> str:
    """An 11-character YouTube-like id (never starting with '-')."""
    chars = [_ID_ALPHABET[i] for i in rng.integers(0, len(_ID_ALPHABET), 11)]
    if chars[0] == "-":
        chars[0] = "Q"
    return "".join(chars)


def write_vggsound_csv(path: str | os.PathLike, rows: list[tuple[str, float, str, str]]) -> str:
    """VGGSound format: no header, ``youtube_id,start_seconds,label,split`` (labels with commas
    quoted)."""
    path = str(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        for vid, start, label, split in rows:
            writer.writerow([vid, _fmt_seconds(start), label, split])
    os.replace(tmp, path)
    return path


def _fmt_seconds(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def generate_corpus(out_dir: str | os.PathLike, classes: list[str] | None = None,
                    videos_per_class: int = 20, seconds: float = 13.0, seed: int = 0,
                    splits: tuple[float, float, float] = (0.7, 0.15, 0.15),
                    fps: int = DEFAULT_FPS, sample_rate: int = DEFAULT_SAMPLE_RATE,
                    size: tuple[int, int] = DEFAULT_SIZE, workers: int | None = None,
                    start_offsets: tuple[float, ...] = (1.0, 2.0)) -> CorpusInfo:
    """Write ``<out_dir>/videos/<video_id>.mp4`` and ``<out_dir>/vggsound.csv``.

    ``splits`` are the train/val/test fractions per class (each split gets at least one video
    when there are enough). ``start_offsets``: the clip start (s) is drawn from these. Existing
    files of the same corpus are reused (the generation is deterministic), so a second call is
    cheap. ``workers`` ffmpeg processes run at once (default: CPU count).
    """
    classes = list(classes or CLASSES)
    for c in classes:
        if c not in _SYNTHS:
            raise KeyError(f"unknown demo class {c!r}; known: {', '.join(CLASSES)}")
    if len(splits) != 3 or abs(sum(splits) - 1.0) > 1e-6:
        raise ValueError(f"splits must be 3 fractions summing to 1, got {splits}")
    out = Path(out_dir)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    jobs, entries = [], []
    for ci, label in enumerate(classes):
        n = videos_per_class
        n_val = int(round(splits[1] * n))
        n_test = int(round(splits[2] * n))
        if n >= 3:
            n_val = max(n_val, 1 if splits[1] > 0 else 0)
            n_test = max(n_test, 1 if splits[2] > 0 else 0)
        n_train = max(0, n - n_val - n_test)
        split_names = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
        for i in range(n):
            vid = video_id(rng)
            start = float(rng.choice(start_offsets))
            path = str(videos / f"{vid}.mp4")
            video_seed = int(rng.integers(0, 2 ** 31))
            entries.append(CorpusEntry(vid, start, label, split_names[i], path))
            jobs.append((path, label, video_seed))

    def build(job):
        path, label, vseed = job
        if not os.path.exists(path):
            make_class_video(path, label, seconds, vseed, fps, sample_rate, size)

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        list(pool.map(build, jobs))
    rows = [(e.video_id, e.start_seconds, e.label, e.split) for e in entries]
    manifest = write_vggsound_csv(out / "vggsound.csv", rows)
    return CorpusInfo(str(out), str(videos), manifest, classes, entries, seconds, sample_rate, fps)


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - convenience CLI
    import argparse

    p = argparse.ArgumentParser(description="Generate the demo audio-visual corpus.")
    p.add_argument("out_dir")
    p.add_argument("--videos-per-class", type=int, default=20)
    p.add_argument("--seconds", type=float, default=13.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    info = generate_corpus(a.out_dir, videos_per_class=a.videos_per_class, seconds=a.seconds,
                           seed=a.seed)
    print(f"{len(info.entries)} videos in {info.videos_dir}; manifest {info.manifest}")


if __name__ == "__main__":  # pragma: no cover
    main()
