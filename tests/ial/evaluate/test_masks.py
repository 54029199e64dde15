"""ial.evaluate.masks: where a row's estimates keep or drop the mixture's sound."""

from __future__ import annotations

import numpy as np
import pytest

from ial.evaluate.masks import MASK_MEASURES, mask_measures, rows_mask_measures
from ial.signal import SAMPLE_RATE


def test_the_measures_of_known_masks():
    """Three bins: source 0 owns the first, source 1 the second, the third is shared 50/50."""
    shares = np.array([[[0.9, 0.1, 0.5]], [[0.1, 0.9, 0.5]]])  # (N=2, F=1, T=3)
    energy = np.array([[1.0, 1.0, 4.0]])
    everything = mask_measures(np.ones_like(shares), shares, energy)  # the mixture as estimates
    assert everything == {"mask_own": [1.0, 1.0], "mask_other": [1.0, 1.0],
                          "mask_shared": [2.0, 2.0]}
    irm = mask_measures(shares, shares, energy)  # the ideal ratio mask keeps the shared bin once
    assert irm["mask_own"] == pytest.approx([0.9, 0.9])
    assert irm["mask_other"] == pytest.approx([0.1, 0.1])
    assert irm["mask_shared"] == pytest.approx([1.0, 1.0])
    # a separator that drops half of the shared bin and a quarter of source 1's own bin
    dropping = np.array([[[1.0, 0.0, 0.25]], [[0.0, 0.75, 0.25]]])
    m = mask_measures(dropping, shares, energy)
    assert m == {"mask_own": [1.0, 0.75], "mask_other": [0.0, 0.0], "mask_shared": [0.5, 0.5]}
    assert list(m) == list(MASK_MEASURES)


def test_a_measure_over_no_bin_is_none():
    shares = np.array([[[0.5, 0.5]], [[0.5, 0.5]]])  # no source dominates any bin
    m = mask_measures(np.ones_like(shares), shares, np.ones((1, 2)))
    assert m["mask_own"] == [None, None] and m["mask_other"] == [None, None]
    assert m["mask_shared"] == [2.0, 2.0]
    silent = mask_measures(np.ones_like(shares), shares, np.zeros((1, 2)))  # no energy anywhere
    assert silent["mask_shared"] == [None, None]


def tones(*hz: float, seconds: float = 1.0) -> np.ndarray:
    """Shape: (len(hz), seconds · 11025) samples."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in hz])


def test_every_row_of_a_mixture_is_measured():
    refs = tones(220.0, 1760.0)
    mixture = refs.sum(axis=0)
    rows, masks = rows_mask_measures(
        {"truth": refs, "mixture": np.repeat(mixture[None], 2, axis=0),
         "silence": np.zeros_like(refs)}, refs, mixture)
    assert set(rows) == set(masks) == {"truth", "mixture", "silence"}
    assert all(m.shape[:2] == (2, 256) and m.min() >= 0.0 for m in masks.values())
    # the true sources keep their own bins and nothing else
    assert min(rows["truth"]["mask_own"]) > 0.95 and max(rows["truth"]["mask_other"]) < 0.05
    assert rows["mixture"]["mask_own"] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert rows["mixture"]["mask_other"] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert rows["silence"]["mask_own"] == [0.0, 0.0]


def test_the_measures_clip_the_masks_and_the_figures_get_them_unclipped():
    """An estimate twice as loud as the mixture: its effective mask is ~2 (what the report's
    figures draw), the measures count at most the whole bin (1)."""
    refs = tones(220.0, 1760.0)
    mixture = refs.sum(axis=0)
    rows, masks = rows_mask_measures({"loud": 2.0 * np.repeat(mixture[None], 2, axis=0)},
                                     refs, mixture)
    loud = masks["loud"][:, :, 2:-2]  # away from the clip's edges
    assert np.median(loud) == pytest.approx(2.0, rel=1e-3)
    assert rows["loud"]["mask_own"] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert rows["loud"]["mask_shared"] == pytest.approx([2.0, 2.0], abs=1e-6)
