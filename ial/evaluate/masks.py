"""How a row's estimates split the mixture, bin by bin: what each source's mask keeps of the bins
its source dominates, what it lets through of the bins another source dominates, and how much
of the bins the sources share all the masks together keep.

SDR/SIR/SAR say how good an estimate is; these say where in the time-frequency plane it gained
or lost it. They were added to test a reading of the adversary's cost in artifacts
(docs/experiments.md, "What the adversary's masks do").

Everything is measured on the model's own 256-bin log-frequency grid (``ial.signal``), with the
*effective* mask of each estimate, ``|estimate| / |mixture|`` (clipped to [0, 1]), so a model's
sliding windows, an oracle's whole-clip masks and the mixture row are measured alike. A bin's
owner follows the ideal ratio mask of the references, ``r_i = |S_i| / Σ_j |S_j|`` (warped
magnitudes); each bin is weighted by the mixture's energy in it, ``|X|²``, so silent bins count
for nothing. Per source ``i`` (fractions in [0, 1]; ``mask_shared`` in [0, N]):

- ``mask_own``: the weighted mean of ``m_i`` over the bins source ``i`` dominates
  (``r_i >= OWN_SHARE``). Ideal 1; less is the source's own sound dropped (artifacts, lost
  target).
- ``mask_other``: the weighted mean of ``m_i`` over the bins another source dominates
  (``r_i <= 1 - OWN_SHARE``). Ideal 0; more is interference let through.
- ``mask_shared``: the weighted mean of ``Σ_j m_j`` over the bins no source dominates (every
  ``r_j < OWN_SHARE``). The IRM keeps 1 there; less is shared sound that every estimate drops,
  more is shared sound that several estimates keep. The same value for every source of a mixture.

A measure over no bin (a source that dominates nowhere) is None, and left out of the means.
"""

from __future__ import annotations

import numpy as np

OWN_SHARE = 0.8  # a bin belongs to a source whose share of the warped magnitude is at least this
MASK_MEASURES = ("mask_own", "mask_other", "mask_shared")


def warped_magnitude(waves: np.ndarray) -> np.ndarray:
    """The warped STFT magnitude (``ial.signal.log_magnitude``), in float32: the measures are
    fractions, quoted to three decimals, and float64 took twice the time.

    Shape: (..., L) samples → (..., 256, T)."""
    import torch

    from ial.signal import log_magnitude

    return log_magnitude(torch.as_tensor(waves, dtype=torch.float32)).numpy()


def source_shares(references: np.ndarray) -> np.ndarray:
    """Each source's share of the warped magnitude, ``r``.

    Shape: references (N, L) samples → (N, 256, T)."""
    mags = warped_magnitude(references)
    return mags / np.maximum(mags.sum(axis=0, keepdims=True), 1e-10)


def _weighted_mean(values: np.ndarray, weights: np.ndarray, where: np.ndarray) -> float | None:
    total = float((weights * where).sum())
    return float((values * weights * where).sum() / total) if total > 0 else None


def mask_measures(masks: np.ndarray, shares: np.ndarray,
                  energy: np.ndarray) -> dict[str, list[float | None]]:
    """The module's three measures for each source of one mixture.

    Shape: masks (N, 256, T) effective masks of one row, shares (N, 256, T) from
    ``source_shares``, energy (256, T) the mixture's ``|X|²`` → ``{measure: [N values]}``."""
    shared_bins = (shares < OWN_SHARE).all(axis=0)
    shared = _weighted_mean(masks.sum(axis=0), energy, shared_bins)
    out: dict[str, list[float | None]] = {m: [] for m in MASK_MEASURES}
    for mask, share in zip(masks, shares):
        out["mask_own"].append(_weighted_mean(mask, energy, share >= OWN_SHARE))
        out["mask_other"].append(_weighted_mean(mask, energy, share <= 1.0 - OWN_SHARE))
        out["mask_shared"].append(shared)
    return out


def rows_mask_measures(estimates: dict[str, np.ndarray], references: np.ndarray,
                       mixture: np.ndarray) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """``mask_measures`` of every row of one mixture, and the rows' effective masks
    ``|estimate| / |mixture|`` on the log grid (one STFT of all the rows' estimates together).
    The measures clip each mask to [0, 1]; the masks returned (for the report's figures) are not
    clipped, so a figure shows where an estimate holds more than the mixture.

    Shape: estimates {row: (N, L)}, references (N, L), mixture (L,) samples →
    ({row: {measure: [N values]}}, {row: (N, 256, T)})."""
    shares = source_shares(references)
    mix = warped_magnitude(mixture)
    energy = mix.astype(np.float64) ** 2
    rows = list(estimates)
    mags = warped_magnitude(np.stack([estimates[r] for r in rows]))  # (rows, N, 256, T)
    masks = dict(zip(rows, mags / np.maximum(mix, 1e-8)))
    measures = {row: mask_measures(np.clip(m, 0.0, 1.0), shares, energy)
                for row, m in masks.items()}
    return measures, masks
