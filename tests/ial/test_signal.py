import math

import torch

from ial import signal


def test_segment_geometry():
    assert signal.num_frames(signal.SEGMENT_SAMPLES) == 256
    spec = signal.stft(torch.zeros(2, signal.SEGMENT_SAMPLES))
    assert spec.shape == (2, 512, 256)


def test_stft_istft_round_trip():
    x = torch.randn(3, 20000, dtype=torch.float64)
    y = signal.istft(signal.stft(x), 20000)
    assert torch.allclose(x, y, atol=1e-9)


def test_pure_tone_peaks_at_its_log_bin():
    f0 = 880.0
    t = torch.arange(signal.SEGMENT_SAMPLES, dtype=torch.float64) / signal.SAMPLE_RATE
    mag = signal.log_magnitude(torch.sin(2 * math.pi * f0 * t)).mean(-1)
    peak = int(mag.argmax())
    assert abs(signal.log_bin_frequency(peak) - f0) / f0 < 0.05


def test_unwarp_of_constant_is_constant():
    ones = torch.ones(256, 10)
    assert torch.allclose(signal.log_unwarp(ones), torch.ones(512, 10), atol=1e-6)
    assert torch.allclose(signal.log_warp(torch.ones(512, 10)), torch.ones(256, 10), atol=1e-6)


def test_sliding_window_overlap_average_is_identity():
    x = torch.randn(2, 150000)
    out = signal.separate_long(lambda w: w.unsqueeze(1).repeat(1, 2, 1), x)
    assert out.shape == (2, 2, 150000)
    assert torch.allclose(out[:, 0], x, atol=1e-5)


def test_stft_under_autograd_after_a_call_in_inference_mode():
    """The cached window made during featurize (inference mode) must not break training."""
    from ial.signal import _window, istft, stft

    _window.cache_clear()
    wave = torch.randn(1, 4096)
    with torch.inference_mode():
        stft(wave)
    x = wave.clone().requires_grad_(True)
    istft(stft(x), 4096).sum().backward()
    assert x.grad is not None
