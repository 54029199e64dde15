"""SDR / SIR / SAR, compatible with ``mir_eval.separation.bss_eval_sources`` (BSS Eval v3).

Definitions (Vincent et al. 2006, as in mir_eval 0.8 and the Sound of Pixels / IAL evaluations):
each estimate ŝ_j is decomposed by least squares onto the 512-tap delayed copies of its own
reference (target), of all references (target + interference) and the rest (artifacts):

    SDR = 10 log10(|s_target|² / |e_interf + e_artif|²)
    SIR = 10 log10(|s_target|² / |e_interf|²)
    SAR = 10 log10(|s_target + e_interf|² / |e_artif|²)

Implementation: the fast_bss_eval 0.1.4 algorithm (normalised signals, correlations by FFT,
Toeplitz / block-Toeplitz normal equations built with its ``toeplitz``/``block_toeplitz``
helpers), in float64, with three changes that do not change any value beyond round-off:

- the FFT is ``L + filter_length - 1`` long (rounded up to a power of two) instead of ``2L - 1``:
  only lags below ``filter_length`` are used, and those are exact at that size;
- only the projected energies ``bᵀG⁻¹b`` are needed, so the (symmetric positive definite) Gram
  matrices are factored by Cholesky (torch, float64) instead of LU — half the work — with a
  general solve as the fallback for a numerically singular Gram matrix;
- several estimate sets for the same references (the model and every baseline row of one mixture)
  are scored in one call, sharing the references' FFTs and factorisations.

Agreement with ``mir_eval.separation.bss_eval_sources(ref, est, compute_permutation=False)`` is
tested to < 0.01 dB (in practice ~1e-9 dB); see tests/ial/test_metrics.py and
benchmarks/metrics.py.

Permutation: the evaluation protocol knows which visual query belongs to which source, so the
default is the *fixed assignment* (estimate ``i`` is scored against reference ``i``); no search
over permutations (which would reward a model that answers the wrong query with the right
sound). ``bss_eval(..., permutation=True)`` gives mir_eval's default behaviour (the permutation
maximising the mean SIR, via fast_bss_eval) for comparison only.

Degenerate values (see ``score_policy``): a perfect estimate has SIR = +inf, the mixture used as
an estimate has SAR = +inf, an all-zero estimate has SDR = SAR = −inf and SIR = NaN. Scores are
clipped to ±``CLAMP_DB`` (100 dB) and NaN becomes −``CLAMP_DB``: a silent estimate is the worst
answer and is counted, never dropped (dropping it would reward a model that outputs silence).

Silent references: a mixture with a reference whose RMS is below ``SILENT_DB`` (−60 dBFS) is not
scored at all (for any row) and is counted as skipped: its SIR/SDR are undefined (mir_eval raises
on an all-zero reference) and nothing can be learned from separating silence.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from fast_bss_eval.numpy.linalg import block_toeplitz, toeplitz

FILTER_LENGTH = 512  # taps of the allowed distortion filter (BSS Eval v3 default)
CLAMP_DB = 100.0  # scores are clipped to ±CLAMP_DB dB
SILENT_DB = -60.0  # dBFS: a reference with RMS below this is silent


def rms_db(x: np.ndarray) -> np.ndarray:
    """RMS level in dBFS (1.0 full scale) along the last axis. Shape: (..., L) → (...)."""
    x = np.asarray(x, dtype=np.float64)
    rms = np.sqrt(np.mean(x * x, axis=-1))
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(rms)


def silent_sources(references: np.ndarray, threshold_db: float = SILENT_DB) -> np.ndarray:
    """Which references are silent (RMS < ``threshold_db`` dBFS). Shape: (N, L) → (N,) bool."""
    return rms_db(references) < threshold_db


def _normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-6)


def _coherence_to_db(coh: np.ndarray) -> np.ndarray:
    coh = np.clip(coh, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(coh / (1.0 - coh))


def _projected_energy(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``b_kᵀ G⁻¹ b_k`` for every column b_k of ``rhs``: the squared norm of a unit-norm estimate's
    least-squares projection onto the subspace whose Gram matrix is ``G`` (symmetric positive
    definite). Cholesky (half the work of the LU in fast_bss_eval/mir_eval); falls back to a
    general solve when ``G`` is not numerically positive definite (degenerate references).

    Shape: gram (n, n), rhs (n, K) → (K,).
    """
    g = torch.from_numpy(np.ascontiguousarray(gram))
    b = torch.from_numpy(np.ascontiguousarray(rhs))
    chol, info = torch.linalg.cholesky_ex(g)
    if int(info) == 0:
        y = torch.linalg.solve_triangular(chol, b, upper=False)
        return (y * y).sum(dim=0).numpy()
    sol = np.linalg.solve(gram, rhs)
    return np.einsum("lk,lk->k", rhs, sol)


def bss_eval_fixed(
    references: np.ndarray, estimates: np.ndarray, filter_length: int = FILTER_LENGTH
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw SDR/SIR/SAR in dB with the fixed assignment (estimate i ↔ reference i).

    Equal to ``mir_eval.separation.bss_eval_sources(references, estimates[m],
    compute_permutation=False)[:3]`` for every estimate set ``m`` (values may be ±inf/NaN in
    degenerate cases; see the module docstring).

    Shape: references (N, L), estimates (M, N, L) or (N, L) → three arrays (M, N) (or (N,)).
    """
    ref = np.asarray(references, dtype=np.float64)
    est = np.asarray(estimates, dtype=np.float64)
    single = est.ndim == 2
    if single:
        est = est[None]
    if ref.ndim != 2 or est.shape[1:] != ref.shape:
        raise ValueError(f"references must be (N, L) and estimates (M, N, L); got "
                         f"{ref.shape} and {tuple(np.shape(estimates))}")
    n_src, length = ref.shape
    n_sets = est.shape[0]
    flat_est = est.reshape(n_sets * n_src, length)  # estimate k = set k // N, source k % N

    ref = _normalize(ref)
    flat_est = _normalize(flat_est)
    n_fft = 2 ** math.ceil(math.log2(length + filter_length - 1))
    R = np.fft.rfft(ref, n=n_fft, axis=-1)  # (N, F)
    E = np.fft.rfft(flat_est, n=n_fft, axis=-1)  # (K, F)

    # acf[l, c, d]: correlation of references c and d at lags -filter_length..filter_length-1
    acf_full = np.fft.irfft(R[:, None, :] * R.conj()[None, :, :], n=n_fft, axis=-1)  # (N, N, n_fft)
    acf = np.concatenate([acf_full[..., :filter_length], acf_full[..., -filter_length:]], axis=-1)
    acf = np.ascontiguousarray(acf.transpose(2, 0, 1))  # (2 * filter_length, N, N)
    # xcorr[l, c, k]: reference c against estimate k at lags 0..filter_length-1
    xcorr = np.fft.irfft(R.conj()[:, None, :] * E[None, :, :], n=n_fft, axis=-1)
    xcorr = np.ascontiguousarray(xcorr[..., :filter_length].transpose(2, 0, 1))  # (l, N, K)

    own = np.arange(n_sets * n_src) % n_src  # the reference each estimate is scored against
    # SDR: project each estimate on the delayed copies of its own reference.
    acf_own = acf[:filter_length, np.arange(n_src), np.arange(n_src)].T  # (N, filter_length)
    T = toeplitz(acf_own)  # (N, filter_length, filter_length)
    rhs = xcorr[:, own, np.arange(n_sets * n_src)]  # (filter_length, K)
    coh_sdr = np.empty(n_sets * n_src)
    for i in range(n_src):  # one factorisation per reference, all its estimates as columns
        coh_sdr[own == i] = _projected_energy(T[i], rhs[:, own == i])
    # SAR: project each estimate on the delayed copies of all references (one solve, K columns).
    rhs_all = xcorr.reshape(filter_length * n_src, n_sets * n_src)
    coh_sar = _projected_energy(block_toeplitz(acf), rhs_all)

    with np.errstate(divide="ignore", invalid="ignore"):
        coh_sir = coh_sdr / coh_sar
    sdr, sir, sar = (_coherence_to_db(c).reshape(n_sets, n_src)
                     for c in (coh_sdr, coh_sir, coh_sar))
    if single:
        return sdr[0], sir[0], sar[0]
    return sdr, sir, sar


def bss_eval(
    references: np.ndarray, estimates: np.ndarray, permutation: bool = False
) -> dict[str, np.ndarray]:
    """SDR/SIR/SAR of one estimate set, raw (unclipped) dB.

    ``permutation=False`` (the project's protocol): fixed assignment. ``permutation=True``:
    mir_eval's default (best permutation by SIR; ``perm[i]`` = reference of estimate i).

    Shape: references (N, L), estimates (N, L) → {"sdr", "sir", "sar", "perm"} each (N,).
    """
    if permutation:
        import fast_bss_eval

        sdr, sir, sar, perm = fast_bss_eval.bss_eval_sources(
            np.asarray(references, np.float64), np.asarray(estimates, np.float64),
            compute_permutation=True)
        return {"sdr": sdr, "sir": sir, "sar": sar, "perm": np.asarray(perm)}
    sdr, sir, sar = bss_eval_fixed(references, estimates)
    return {"sdr": sdr, "sir": sir, "sar": sar, "perm": np.arange(len(sdr))}


def score_policy(values: np.ndarray, clamp_db: float = CLAMP_DB) -> np.ndarray:
    """Clip to ±``clamp_db`` and map NaN (all-zero estimate) to −``clamp_db``."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=-clamp_db,
                           posinf=clamp_db, neginf=-clamp_db)
    return np.clip(values, -clamp_db, clamp_db)


def score_mixture(
    references: np.ndarray,
    mixture: np.ndarray,
    estimates: dict[str, np.ndarray],
    silent_db: float = SILENT_DB,
    clamp_db: float = CLAMP_DB,
) -> dict[str, dict[str, list[float]]] | None:
    """Score every row of one mixture (fixed assignment, clipped, with SDRi).

    ``estimates`` maps a row name (``model``, ``oracle_irm``, ...) to its estimates; the
    ``mixture`` row (the mixture itself as the estimate of every source) is added here and is the
    baseline of SDRi = SDR(row) − SDR(mixture). Returns None when a reference is silent (the
    mixture is skipped; see the module docstring).

    Shape: references (N, L), mixture (L,), each estimate (N, L) samples →
    ``{row: {"sdr": [N], "sir": [N], "sar": [N], "sdri": [N]}}``.
    """
    references = np.asarray(references, dtype=np.float64)
    if silent_sources(references, silent_db).any():
        return None
    n_src = references.shape[0]
    rows = {"mixture": np.broadcast_to(np.asarray(mixture, np.float64), references.shape)}
    rows.update({name: np.asarray(est, np.float64) for name, est in estimates.items()})
    names = list(rows)
    sdr, sir, sar = bss_eval_fixed(references, np.stack([rows[n] for n in names]))
    sdr, sir, sar = (score_policy(v, clamp_db) for v in (sdr, sir, sar))
    base = sdr[0]
    out = {}
    for m, name in enumerate(names):
        out[name] = {"sdr": sdr[m].tolist(), "sir": sir[m].tolist(), "sar": sar[m].tolist(),
                     "sdri": (sdr[m] - base).tolist()}
        assert len(out[name]["sdr"]) == n_src
    return out
