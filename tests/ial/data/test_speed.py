"""Speed perturbation of training windows: the pitch moves by the factor, the draw is
reproducible, and an unperturbed run is unchanged bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ial.data.loader import ShardStream, list_dataset_shards, scan_split
from ial.data.speed import change_speed, check_factors, draw_factor, input_length
from ial.data.synthetic import write_synthetic_shards as write_shards

SR = 11025


def _peak_hz(wave: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.argmax(spectrum) * SR / len(wave))


@pytest.mark.parametrize("factor", [0.9, 1.1, 1.05])
def test_change_speed_moves_the_pitch_by_the_factor_and_keeps_the_level(factor):
    t = np.arange(input_length(8192, factor)) / SR
    wave = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    out = change_speed(wave, factor)
    assert out.dtype == np.float32 and out.shape[0] >= 8192
    out = out[:8192]
    assert _peak_hz(out) == pytest.approx(440.0 * factor, abs=2.0)
    middle = out[500:-500]  # away from the resampler's edges
    assert np.sqrt(np.mean(middle ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_factor_one_is_the_identity_and_draws_nothing():
    wave = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    assert change_speed(wave, 1.0) is wave
    rng, untouched = np.random.default_rng(5), np.random.default_rng(5)
    assert draw_factor(rng, ()) == 1.0 and draw_factor(rng, (1.0,)) == 1.0
    assert rng.integers(1 << 30) == untouched.integers(1 << 30)  # the stream is as it was
    drawn = {draw_factor(np.random.default_rng(s), (0.9, 1.0, 1.1)) for s in range(40)}
    assert drawn == {0.9, 1.0, 1.1}


def test_check_factors_names_the_bad_value():
    assert check_factors([0.9, 1.0, 1.1]) is None and check_factors([]) is None
    assert "3.0" in check_factors([0.9, 3.0])
    assert check_factors([True]) is not None and check_factors(["fast"]) is not None


def _first_batch(root, factors, seed=3):
    shards, classes = scan_split(list_dataset_shards(str(root), "toy"), "train")
    stream = ShardStream(shards, classes, seed=seed, rank=0, world_size=1, batch_size=4,
                         num_workers=0, segment_samples=2048, speed_factors=factors)
    return next(stream.batches())


def test_loader_plays_training_windows_at_the_drawn_speed(tmp_path):
    write_shards(str(tmp_path), shards=1, rows=8, samples=8192, splits=("train",))
    plain = _first_batch(tmp_path, ())
    assert torch.equal(plain.audio, _first_batch(tmp_path, (1.0,)).audio)  # 1.0: unchanged
    fast = _first_batch(tmp_path, (1.1,))
    assert fast.clip_id == plain.clip_id and fast.audio.shape == plain.audio.shape
    for p, f in zip(plain.audio.numpy(), fast.audio.numpy()):  # each clip's tone, 10 % higher
        assert _peak_hz(f) == pytest.approx(1.1 * _peak_hz(p), rel=0.03)
    mixed = _first_batch(tmp_path, (0.9, 1.0, 1.1))
    assert torch.equal(mixed.audio, _first_batch(tmp_path, (0.9, 1.0, 1.1)).audio)  # reproducible


def test_train_config_refuses_a_bad_speed_factor():
    from ial.config import ConfigError
    from ial.training.config import TrainConfig

    with pytest.raises(ConfigError, match="speed_factors"):
        TrainConfig(speed_factors=[0.9, 5.0]).validate()
