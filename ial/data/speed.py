"""Speed perturbation of training clips: a clip played a little faster or slower, pitch and tempo
together, as a resampler (or a tape) does. Kaldi's ``speed_perturb`` for speech (factors 0.9, 1.0,
1.1; Ko et al., Interspeech 2015).

Why this and not pitch or tempo alone: resampling scales frequency and time uniformly, so the
ratios of the harmonics and the shape of every attack are kept; it needs no phase vocoder (whose
smearing would be a new artefact for the separator to learn); and an instrument played ~1.7
semitones higher and 10 % faster is still a plausible recording of it. Its spectral envelope
(formants) moves with the pitch, which larger factors make audible as another instrument, so keep
them near 1.

The loader applies it to training windows only (``TrainConfig.speed_factors``), per clip, before
mixing: mixtures, targets and the mixture's own STFT are all built from the perturbed clips, so the
separation target stays exact.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

# Largest denominator of the rational up/down ratio resample_poly uses (0.9 = 9/10, 1.05 = 21/20).
_MAX_DENOMINATOR = 100


def speed_ratio(factor: float) -> Fraction:
    """``factor`` as the rational speed the resampler applies (> 1: faster, higher)."""
    return Fraction(factor).limit_denominator(_MAX_DENOMINATOR)


def input_length(samples: int, factor: float) -> int:
    """Samples of the original clip that, played at ``factor``, fill ``samples`` samples."""
    if factor == 1.0:  # every clip of an unperturbed run: no Fraction arithmetic
        return samples
    return math.ceil(samples * speed_ratio(factor))


def draw_factor(rng: np.random.Generator, factors: tuple[float, ...]) -> float:
    """One of ``factors``, uniformly. Draws nothing (so leaves ``rng`` as it was, and every
    unperturbed run unchanged) when no factor differs from 1."""
    if all(f == 1.0 for f in factors):
        return 1.0
    return float(factors[int(rng.integers(len(factors)))])


def change_speed(wave: np.ndarray, factor: float) -> np.ndarray:
    """``wave`` played at ``factor`` × its speed: polyphase resampling by 1/factor with scipy's
    anti-aliasing filter (Kaiser window). Returned unchanged when ``factor`` is 1.

    Shape: (L,) samples → (ceil(L / factor),) samples, float32, same sample rate (11025 Hz).
    """
    if factor == 1.0:
        return wave
    from scipy.signal import resample_poly

    ratio = speed_ratio(factor)
    return resample_poly(wave, up=ratio.denominator, down=ratio.numerator).astype(np.float32)


def check_factors(factors) -> str | None:
    """Why ``factors`` is not a usable list of speed factors, or None."""
    for f in factors:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.5 <= f <= 2.0:
            return f"{f!r} is not a speed factor in [0.5, 2.0] (e.g. [0.9, 1.0, 1.1])"
    return None
