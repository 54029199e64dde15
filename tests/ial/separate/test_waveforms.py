"""Oracle masks through the log warp, and sliding-window separation of long clips."""

import math

import torch
from torch import nn

from ial import signal
from ial.models import ModelConfig, SeparationOutput, build_model
from ial.separate.waveforms import separate_waveforms, training_window


def sdr(est: torch.Tensor, ref: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - est).pow(2).sum()))


def harmonic(f0: float, n: int, L: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(L, dtype=torch.float64) / signal.SAMPLE_RATE
    env = 0.6 + 0.4 * torch.sin(2 * math.pi * 1.3 * t + float(torch.rand(1, generator=g)) * 6)
    return env * sum(torch.sin(2 * math.pi * f0 * k * t + float(torch.rand(1, generator=g)) * 6) / k
                     for k in range(1, n + 1))


def test_oracle_ratio_mask_on_log_grid_reconstructs_sources():
    L = signal.SEGMENT_SAMPLES
    s1, s2 = harmonic(220.0, 4, L, 0), harmonic(1500.0, 3, L, 1)
    spec = signal.stft(s1 + s2)
    m1, m2 = signal.log_warp(signal.stft(s1).abs()), signal.log_warp(signal.stft(s2).abs())
    mask = torch.stack([m1, m2]) / (m1 + m2 + 1e-8)  # ratio masks on the log grid (N, 256, T)
    est = signal.apply_mask(spec.unsqueeze(0), mask.unsqueeze(0), L)[0]
    assert sdr(est[0], s1) > 20, sdr(est[0], s1)
    assert sdr(est[1], s2) > 20, sdr(est[1], s2)
    # swapping the masks must be terrible (the test can fail)
    assert sdr(est[1], s1) < 0


class HalfMask(nn.Module):
    """Stand-in separator returning 0.5 for each of N queries (checks the plumbing)."""

    def forward(self, mix_mag, visual):
        B, _, T = mix_mag.shape
        return SeparationOutput(mask=torch.full((B, visual.shape[1], 256, T), 0.5))


def test_sliding_window_separation_of_a_long_clip():
    mixture = torch.randn(2, signal.CLIP_SAMPLES)
    out = separate_waveforms(HalfMask(), mixture, torch.zeros(2, 3, 1, 1, 1, 1))
    assert out.shape == (2, 3, signal.CLIP_SAMPLES)
    assert torch.allclose(out, 0.5 * mixture.unsqueeze(1).expand_as(out), atol=1e-4)


def test_separate_waveforms_with_real_models_short_and_long():
    for name in ("ial_cms", "sop"):
        cfg = ModelConfig(name=name, visual_channels=8, audio_channels=[4, 8, 8, 8], embed_dim=8,
                          common_hidden=8, sop_ngf=4, sop_k=4)
        model = build_model(cfg).train()
        visual = torch.rand(1, 2, 2, 8, 3, 3)
        short = separate_waveforms(model, torch.randn(1, 20000), visual)
        assert short.shape == (1, 2, 20000) and torch.isfinite(short).all()
        mixture = torch.randn(1, 100000)
        long = separate_waveforms(model, mixture, visual)
        assert long.shape == (1, 2, 100000)
        assert model.training  # eval mode only inside
        if name == "sop":
            assert model.mask_threshold == 0.5


class WavyMask(torch.nn.Module):
    """A soft mask crossing 0.5 along frequency, thresholded at test time like ``sop``."""

    mask_threshold = 0.5

    def forward(self, mag, visual):
        from ial.models.base import SeparationOutput

        f = torch.linspace(0, 12, mag.shape[1])
        mask = (0.5 + 0.4 * torch.sin(f))[None, None, :, None].expand(mag.shape[0], 1, -1,
                                                                        mag.shape[2])
        return SeparationOutput(mask=mask)


def test_a_thresholded_mask_is_binarised_after_unwarping():
    """Sound of Pixels: the soft mask goes to the linear grid first, then > 0.5 (binarising on
    the log grid and unwarping would give fractional values at every edge)."""
    wave = torch.randn(1, 8000)
    spec = signal.stft(wave)
    mask = WavyMask()(signal.log_warp(spec.abs()), None).mask
    after = signal.apply_mask(spec, mask, 8000, threshold=0.5)
    before = signal.apply_mask(spec, (mask > 0.5).to(mask.dtype), 8000)
    got = separate_waveforms(WavyMask(), wave, torch.zeros(1, 1, 1, 1, 1, 1), window=8000)
    assert torch.allclose(got, after, atol=1e-5)
    assert not torch.allclose(got, before, atol=1e-3)


def test_tapered_overlaps_have_no_seams():
    """Each window's estimate is a different constant: averaged overlaps step at every window
    start (the seams that showed as lines in the report), Hann-tapered ones fade smoothly."""
    calls = iter(range(100))

    def window_estimate(wave):
        return torch.full((wave.shape[0], 1, wave.shape[1]), float(next(calls)))

    mixture = torch.zeros(1, 40000)
    averaged = signal.separate_long(window_estimate, mixture, window=8000)
    calls = iter(range(100))
    tapered = signal.separate_long(window_estimate, mixture, window=8000, taper=True)
    assert averaged.diff(dim=-1).abs().max() >= 0.5
    assert tapered.diff(dim=-1).abs().max() < 0.01
    # where one window alone covers a sample, both give that window's estimate exactly
    assert float(tapered[0, 0, 0]) == float(averaged[0, 0, 0]) == 0.0


def test_training_window_comes_from_the_export_lineage():
    """The window a separator is applied with: its training config's segment_samples, else the
    authors' 65535 (an export that does not record it)."""
    trained = {"lineage": {"configs": {"train": {"segment_samples": 16383}}}}
    assert training_window(trained) == 16383
    assert training_window({"lineage": {"run": "old"}}) == signal.SEGMENT_SAMPLES
    assert training_window({}) == signal.SEGMENT_SAMPLES
