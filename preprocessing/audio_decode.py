"""Decode a clip's audio: ffmpeg → s16le mono @ 11025 Hz through a pipe → fixed-length waveform."""

from __future__ import annotations

import numpy as np

from ial.media import run_ffmpeg
from ial.signal import CLIP_SAMPLES, SAMPLE_RATE


def fit_length(wave: np.ndarray, length: int) -> tuple[np.ndarray, int]:
    """Zero-pad or trim ``wave`` to ``length`` samples.

    Returns ``(wave, pad)``: ``pad`` > 0 samples padded at the end, < 0 samples trimmed from the end.
    """
    pad = length - wave.shape[0]
    if pad > 0:
        wave = np.concatenate([wave, np.zeros(pad, dtype=wave.dtype)])
    elif pad < 0:
        wave = wave[:length]
    return wave, pad


def decode_audio(path: str, length: int = CLIP_SAMPLES,
                 sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """Mono waveform of a local media file, resampled by ffmpeg, padded/trimmed to ``length``.

    Shape: → (length,) float32 in [-1, 1] samples @ ``sample_rate`` Hz, plus the pad (samples, see
    ``fit_length``). Raises RuntimeError (with ffmpeg's message) when there is no decodable audio.
    """
    proc = run_ffmpeg(["-i", path, "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(sample_rate),
                       "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1"])
    pcm = np.frombuffer(proc.stdout, dtype="<i2")
    if pcm.size == 0:
        raise RuntimeError("no audio samples decoded")
    return fit_length(pcm.astype(np.float32) / 32768.0, length)
