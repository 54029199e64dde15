"""Signal ops shared by featurization, the models and evaluation (one torch-native implementation).

Constants follow the paper / Sound of Pixels recipe (DESIGN.md):

- audio at ``SAMPLE_RATE`` = 11025 Hz; training windows of ``SEGMENT_SAMPLES`` = 65535 samples
  (~5.94 s);
- STFT with ``N_FFT`` = 1022 (512 linear bins), hop ``HOP`` = 256, Hann window, centred:
  a 65535-sample window gives 256 frames;
- magnitudes warped onto a ``LOG_BINS`` = 256-bin log-frequency grid (the SoP ``warpgrid``
  mapping, implemented as a fixed linear-interpolation matrix so it is exact, differentiable and
  fast); the inverse warp brings a mask on the log grid back to the 512 linear bins.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import torch

SAMPLE_RATE = 11025  # Hz
N_FFT = 1022
HOP = 256  # samples
LINEAR_BINS = N_FFT // 2 + 1  # 512
LOG_BINS = 256
SEGMENT_SAMPLES = 65535  # samples, ~5.94 s
SEGMENT_FRAMES = SEGMENT_SAMPLES // HOP + 1  # 256 STFT frames
CLIP_SECONDS = 10.0
CLIP_SAMPLES = int(CLIP_SECONDS * SAMPLE_RATE)  # 110250 samples
SILENCE_DBFS = -50.0  # dBFS: audio whose peak is at or below this counts as silent


def num_frames(num_samples: int) -> int:
    """STFT frames for a signal of ``num_samples`` samples (centred STFT)."""
    return num_samples // HOP + 1


@functools.lru_cache(maxsize=8)
def _window(device: str, dtype: torch.dtype) -> torch.Tensor:
    # Cached across calls, so never an inference tensor: one made inside torch.inference_mode
    # (featurize) would break a later STFT under autograd in the same process (training).
    with torch.inference_mode(False):
        return torch.hann_window(N_FFT, device=device, dtype=dtype)


def stft(wave: torch.Tensor) -> torch.Tensor:
    """Complex STFT.

    Shape: wave (..., L) samples → (..., 512, num_frames(L)) complex.
    """
    lead = wave.shape[:-1]
    flat = wave.reshape(-1, wave.shape[-1])
    spec = torch.stft(flat, N_FFT, HOP, window=_window(str(wave.device), wave.dtype),
                      center=True, return_complex=True)
    return spec.reshape(*lead, *spec.shape[-2:])


def istft(spec: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse of ``stft``.

    Shape: spec (..., 512, T) complex → (..., length) samples.
    """
    lead = spec.shape[:-2]
    flat = spec.reshape(-1, *spec.shape[-2:])
    real_dtype = flat.real.dtype
    wave = torch.istft(flat, N_FFT, HOP, window=_window(str(spec.device), real_dtype),
                       center=True, length=length)
    return wave.reshape(*lead, length)


def _interp_matrix(src_positions: np.ndarray, n_src: int) -> np.ndarray:
    """Rows of linear-interpolation weights: out[i] = Σ_j M[i, j] in[j] at fractional src index."""
    m = np.zeros((len(src_positions), n_src), dtype=np.float64)
    for i, p in enumerate(src_positions):
        p = min(max(p, 0.0), n_src - 1.0)
        lo = int(math.floor(p))
        hi = min(lo + 1, n_src - 1)
        frac = p - lo
        m[i, lo] += 1.0 - frac
        m[i, hi] += frac
    return m


@functools.lru_cache(maxsize=1)
def _warp_matrices() -> tuple[np.ndarray, np.ndarray]:
    # Forward (SoP warpgrid(warp=True)): log bin i samples linear bin (21^(i/255) - 1)/20 * 511.
    i = np.arange(LOG_BINS)
    src_lin = (np.power(21.0, i / (LOG_BINS - 1)) - 1.0) / 20.0 * (LINEAR_BINS - 1)
    fwd = _interp_matrix(src_lin, LINEAR_BINS)  # (256, 512)
    # Inverse (warp=False): linear bin j samples log bin log(1 + 20 j/511)/log(21) * 255.
    j = np.arange(LINEAR_BINS)
    src_log = np.log1p(20.0 * j / (LINEAR_BINS - 1)) / math.log(21.0) * (LOG_BINS - 1)
    inv = _interp_matrix(src_log, LOG_BINS)  # (512, 256)
    return fwd, inv


def _matrix(which: int, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(_warp_matrices()[which], dtype=like.dtype, device=like.device)


def log_warp(x: torch.Tensor) -> torch.Tensor:
    """Linear-frequency → 256-bin log-frequency grid (differentiable).

    Shape: (..., 512, T) → (..., 256, T).
    """
    return torch.matmul(_matrix(0, x), x)


def log_unwarp(x: torch.Tensor) -> torch.Tensor:
    """256-bin log-frequency grid → 512 linear bins (differentiable).

    Shape: (..., 256, T) → (..., 512, T).
    """
    return torch.matmul(_matrix(1, x), x)


def log_bin_frequency(index: float) -> float:
    """Centre frequency in Hz of log bin ``index`` (0..255)."""
    lin = (21.0 ** (index / (LOG_BINS - 1)) - 1.0) / 20.0 * (LINEAR_BINS - 1)
    return lin * SAMPLE_RATE / N_FFT


def log_magnitude(wave: torch.Tensor) -> torch.Tensor:
    """Warped STFT magnitude of a waveform — the featurizer's stored ``spec``.

    Shape: (..., L) samples → (..., 256, num_frames(L)), linear magnitude (not log).
    """
    return log_warp(stft(wave).abs())


def network_input(log_mag: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """``log(magnitude)`` as fed to the audio networks. Shape preserved."""
    return torch.log(log_mag.clamp_min(eps))


def apply_mask(mixture_spec: torch.Tensor, mask_log: torch.Tensor, length: int,
               threshold: float | None = None) -> torch.Tensor:
    """Mask on the log grid → linear grid (→ binarised ``> threshold`` when given, Sound of
    Pixels' test-time rule) → × mixture magnitude, mixture phase → waveform.

    Shape: mixture_spec (B, 512, T) complex, mask_log (B, N, 256, T) → (B, N, length) samples.
    """
    mask_lin = log_unwarp(mask_log)  # (B, N, 512, T)
    if threshold is not None:
        mask_lin = (mask_lin > threshold).to(mask_lin.dtype)
    return istft(mixture_spec.unsqueeze(1) * mask_lin.to(mixture_spec.real.dtype), length)


def sliding_windows(length: int, window: int = SEGMENT_SAMPLES,
                    hop: int | None = None) -> list[int]:
    """Start offsets (samples) of windows covering ``length`` samples; the last window ends at
    ``length`` (or the only window starts at 0 when ``length <= window``)."""
    hop = hop or window // 2
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, hop))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def separate_long(
    separate_window: Callable[[torch.Tensor], torch.Tensor],
    mixture: torch.Tensor,
    window: int = SEGMENT_SAMPLES,
    hop: int | None = None,
    taper: bool = False,
) -> torch.Tensor:
    """Separate a long mixture with a sliding window and overlap-add the estimates.

    ``separate_window`` maps (B, window) samples → (B, N, window) samples. Overlapping estimates
    are averaged (``taper=False``, the authors' way: with a large hop their seams show as steps)
    or cross-faded with a Hann taper (``taper=True``: each estimate weighted by a Hann window,
    floored at 1e-3 so a sample covered by one window only is that window's estimate exactly).
    Signals shorter than ``window`` are zero-padded and trimmed back.

    Shape: mixture (B, L) samples → (B, N, L) samples.
    """
    B, L = mixture.shape
    if L < window:
        padded = torch.nn.functional.pad(mixture, (0, window - L))
        return separate_window(padded)[..., :L]
    out = None
    weight = torch.zeros(L, dtype=mixture.dtype, device=mixture.device)
    w = (torch.hann_window(window, periodic=False, dtype=mixture.dtype, device=mixture.device)
         .clamp_min(1e-3) if taper else torch.ones(window, dtype=mixture.dtype,
                                                   device=mixture.device))
    for start in sliding_windows(L, window, hop):
        est = separate_window(mixture[:, start:start + window])
        if out is None:
            out = torch.zeros(B, est.shape[1], L, dtype=est.dtype, device=est.device)
        out[..., start:start + window] += est * w
        weight[start:start + window] += w
    return out / weight
