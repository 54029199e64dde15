"""SDR/SIR/SAR against mir_eval (the reference bss_eval_sources), policies and oracle rows."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ial.evaluate.metrics import (CLAMP_DB, bss_eval, bss_eval_fixed, rms_db, score_mixture,
                                  silent_sources)
from ial.evaluate.oracle import ORACLES, oracle_estimates

mir_eval = pytest.importorskip("mir_eval")


def mir(ref: np.ndarray, est: np.ndarray, permutation: bool = False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return mir_eval.separation.bss_eval_sources(ref, est, compute_permutation=permutation)


def tones(length: int, freqs, sr: int = 11025, seed: int = 0) -> np.ndarray:
    """Harmonic tones with vibrato and a little noise, one per frequency. Shape: (N, length)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / sr
    out = []
    for f in freqs:
        phase = 2 * np.pi * f * t + 3.0 * np.sin(2 * np.pi * 5 * t)
        wave = sum(np.sin(h * phase) / h for h in range(1, 5))
        out.append(0.3 * wave * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t + f))
                   + 0.003 * rng.standard_normal(length))
    return np.stack(out)


@pytest.mark.parametrize("n_src", [2, 3])
def test_random_cases_agree_with_mir_eval(n_src):
    rng = np.random.default_rng(n_src)
    length = 6000
    ref = rng.standard_normal((n_src, length))
    mixing = np.eye(n_src) + 0.3 * rng.standard_normal((n_src, n_src))
    est = mixing @ ref + 0.2 * rng.standard_normal((n_src, length))
    ours = bss_eval_fixed(ref, est)
    theirs = mir(ref, est)[:3]
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=0.01)
        assert np.max(np.abs(a - b)) < 1e-6  # in practice float64 round-off


def test_structured_cases_agree_with_mir_eval():
    """Filtered, delayed and leaking estimates of tonal sources (what bss_eval's filter allows)."""
    ref = tones(8000, [220.0, 330.0, 523.0])
    kernel = np.array([0.6, 0.3, -0.1, 0.05])
    est = np.stack([
        np.convolve(ref[0], kernel)[:8000] + 0.2 * ref[1],  # distorted + interference
        np.roll(ref[1], 37) + 0.05 * np.sin(np.arange(8000) * 0.9),  # delay + artifact
        0.5 * ref[2] + 0.5 * ref[0] + 0.01 * np.cos(np.arange(8000) * 2.1),  # half leak
    ])
    ours = bss_eval_fixed(ref, est)
    theirs = mir(ref, est)[:3]
    for a, b in zip(ours, theirs):
        assert np.max(np.abs(a - b)) < 0.01


def test_stacked_estimate_sets_equal_separate_calls():
    ref = tones(5000, [200.0, 450.0])
    rng = np.random.default_rng(1)
    sets = np.stack([ref + s * rng.standard_normal(ref.shape) for s in (0.01, 0.1, 1.0)])
    stacked = bss_eval_fixed(ref, sets)
    for m in range(3):
        single = bss_eval_fixed(ref, sets[m])
        for a, b in zip(stacked, single):
            np.testing.assert_allclose(a[m], b, atol=1e-9)


def test_fixed_assignment_is_not_a_permutation_search():
    """Swapped answers score badly with the protocol's fixed assignment; mir_eval's default
    permutation search would forgive them (and ``permutation=True`` matches it)."""
    ref = tones(6000, [250.0, 700.0])
    rng = np.random.default_rng(2)
    est = ref[::-1] + 0.01 * rng.standard_normal(ref.shape)
    fixed = bss_eval(ref, est)
    assert (fixed["sdr"] < -10).all()
    np.testing.assert_array_equal(fixed["perm"], [0, 1])
    searched = bss_eval(ref, est, permutation=True)
    assert (searched["sdr"] > 5).all()
    np.testing.assert_array_equal(searched["perm"], [1, 0])
    theirs = mir(ref, est, permutation=True)
    np.testing.assert_allclose(searched["sdr"], theirs[0], atol=0.01)
    np.testing.assert_array_equal(searched["perm"], theirs[3])


def test_perfect_estimate_and_mixture_give_the_expected_sdr():
    rng = np.random.default_rng(3)
    length = 110250  # a full 10 s clip
    s1 = rng.standard_normal(length)
    s2 = rng.standard_normal(length) * 0.5  # about -6 dB
    ref = np.stack([s1, s2])
    perfect = bss_eval_fixed(ref, ref.copy())[0]
    assert (perfect > 100).all()  # only round-off error left
    scores = score_mixture(ref, s1 + s2, {"perfect": ref.copy()})
    # Mixture as the estimate: the other source is interference. Of independent white noise, the
    # 512-tap projection also counts a fraction F/L of the other source's energy as "target".
    p1, p2, f = np.sum(s1 ** 2), np.sum(s2 ** 2), 512 / length
    expected = [10 * np.log10((p1 + f * p2) / ((1 - f) * p2)),
                10 * np.log10((p2 + f * p1) / ((1 - f) * p1))]
    np.testing.assert_allclose(scores["mixture"]["sdr"], expected, atol=0.1)
    np.testing.assert_allclose(scores["mixture"]["sir"], expected, atol=0.1)
    assert abs(expected[0] - 6.02) < 0.2 and abs(expected[1] + 5.9) < 0.2
    assert scores["mixture"]["sar"] == [CLAMP_DB, CLAMP_DB]  # +inf (no artifacts), clipped
    assert scores["mixture"]["sdri"] == [0.0, 0.0]
    assert scores["perfect"]["sdr"] == [CLAMP_DB, CLAMP_DB]  # > 100 dB, clipped
    np.testing.assert_allclose(scores["perfect"]["sdri"],
                               [CLAMP_DB - m for m in scores["mixture"]["sdr"]], atol=1e-9)


def test_silent_reference_skips_the_mixture_and_silent_estimate_is_worst():
    ref = tones(6000, [300.0, 600.0])
    quiet = ref.copy()
    quiet[1] *= 1e-4  # about -90 dBFS
    assert silent_sources(quiet).tolist() == [False, True]
    assert rms_db(np.zeros(10)) == -np.inf
    assert score_mixture(quiet, quiet.sum(0), {"model": quiet}) is None
    zero = ref.copy()
    zero[1] = 0.0
    raw = bss_eval_fixed(ref, zero)
    assert raw[0][1] == -np.inf and np.isnan(raw[1][1])
    scores = score_mixture(ref, ref.sum(0), {"model": zero})
    assert [scores["model"][k][1] for k in ("sdr", "sir", "sar")] == [-CLAMP_DB] * 3
    assert scores["model"]["sdr"][0] > 50


@pytest.mark.parametrize("name", ["oracle_irm", "oracle_ibm", "oracle_irm_linear"])
def test_oracle_masks_beat_the_mixture(name):
    length = 22050
    ref = tones(length, [180.0, 1250.0], seed=4)
    mixture = ref.sum(0)
    oracles = oracle_estimates([name], ref, mixture)
    est, mask = oracles[name]
    assert est.shape == ref.shape
    assert mask.min() >= 0 and mask.max() <= 1 + 1e-9
    scores = score_mixture(ref, mixture, {name: est})
    assert min(scores[name]["sdri"]) > 5.0, scores
    assert name in ORACLES


def test_irm_masks_partition_the_mixture():
    ref = tones(11025, [200.0, 900.0], seed=5)
    _, mask = ORACLES.get("oracle_irm")(torch.as_tensor(ref), torch.as_tensor(ref.sum(0)))
    np.testing.assert_allclose(mask.sum(0).numpy(), 1.0, atol=1e-6)
    _, binary = ORACLES.get("oracle_ibm")(torch.as_tensor(ref), torch.as_tensor(ref.sum(0)))
    assert set(np.unique(binary.numpy())) <= {0.0, 1.0}
    np.testing.assert_array_equal(binary.sum(0).numpy(), 1.0)


def test_pure_tones_rank_deficient_gram_agree_with_mir_eval():
    """Pure sinusoids make the 512-shift Gram matrices (nearly) singular: still mir_eval's
    values."""
    t = np.arange(11025) / 11025
    ref = np.stack([np.sin(2 * np.pi * 440 * t),
                    np.sin(2 * np.pi * 660 * t) + 0.5 * np.sin(2 * np.pi * 1320 * t)])
    est = ref + 0.1 * np.random.default_rng(0).standard_normal(ref.shape)
    for a, b in zip(bss_eval_fixed(ref, est), mir(ref, est)[:3]):
        assert np.max(np.abs(a - b)) < 0.01
