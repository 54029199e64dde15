"""Separate waveforms with a trained separator (evaluation and ``ial separate``).

Each window (65535 samples unless the caller passes one; evaluation and ``ial separate`` pass
the separator's own, ``training_window``): STFT → warped magnitude → separator mask → unwarp,
mixture phase, iSTFT;
windows slide with half overlap and overlapping estimates are averaged
(``ial.signal.separate_long``).
"""

from __future__ import annotations

import torch

from ial import signal


def training_window(meta: dict) -> int:
    """The window (samples) a separator export was trained on: its training config's
    ``segment_samples`` (lineage), or ``signal.SEGMENT_SAMPLES`` (65535, the authors' training
    and separation window) for an export that does not record it.

    Separation slides this window over longer audio, as the authors slide their training length:
    the separator's normalisations see a window's statistics, and a model trained on 16383-sample
    windows lost ~1 dB SDRi when applied to 32767-sample ones (docs/experiments.md, "Shorter
    training windows").
    """
    train = ((meta.get("lineage") or {}).get("configs") or {}).get("train") or {}
    return int(train.get("segment_samples") or signal.SEGMENT_SAMPLES)


@torch.no_grad()
def separate_waveforms(model: torch.nn.Module, mixture: torch.Tensor, visual: torch.Tensor,
                       window: int = signal.SEGMENT_SAMPLES, hop: int | None = None,
                       taper: bool = False) -> torch.Tensor:
    """Separate ``mixture`` into one stem per visual query.

    Runs without gradients and with the model in eval mode (restored afterwards): BatchNorm uses
    its running statistics. A model with a ``mask_threshold`` (``sop``: 0.5) has its mask
    binarised after it is unwarped to the linear grid, as Sound of Pixels does. ``window``/
    ``hop`` in samples (default: 65535-sample windows, half overlap); ``taper``: cross-fade the
    overlaps with a Hann window instead of averaging them (``ial.signal.separate_long``).

    Shape: mixture (B, L) samples @ 11025 Hz, visual (B, N, K, C, H, W) → (B, N, L) samples.
    """
    if mixture.ndim != 2:
        raise ValueError(f"mixture must be (B, L), got {tuple(mixture.shape)}")
    if visual.shape[0] != mixture.shape[0]:
        raise ValueError(f"visual batch {visual.shape[0]} != mixture batch {mixture.shape[0]}")

    threshold = getattr(model, "mask_threshold", None)

    def one_window(wave: torch.Tensor) -> torch.Tensor:
        spec = signal.stft(wave)
        mask = model(signal.log_warp(spec.abs()), visual).mask
        return signal.apply_mask(spec, mask, wave.shape[-1], threshold)

    was_training = model.training
    model.eval()
    try:
        return signal.separate_long(one_window, mixture, window, hop, taper)
    finally:
        model.train(was_training)
