"""Benchmark: the project's metric computation vs mir_eval ``bss_eval_sources`` (the reference).

Workload = what ``ial.evaluate`` scores per test mixture: a full 10 s, 2-source mixture of
generated instruments and its four rows of estimates — the model (here a stand-in: the references
with leakage and noise), the oracle IRM and IBM, and the mixture itself.

- ours: ``ial.evaluate.metrics.score_mixture`` (all rows in one call, float64);
- baseline: ``mir_eval.separation.bss_eval_sources(ref, est, compute_permutation=False)`` once per
  row (mir_eval 0.8.2, the implementation papers report with).

Both run in this process, single-threaded, on the same cases. Prints the time ratio (and, for
reference, the ratio for the model row alone, one estimate set per call on both sides) and the
largest |ΔSDR|/|ΔSIR|/|ΔSAR| between the two (finite values), and as the last line
``RESULT metrics_speedup=<x> target>=5``.

    python benchmarks/metrics.py          # 16 mixtures
    python benchmarks/metrics.py --quick  # 4 mixtures (< 1 min on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def make_cases(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """``n`` 10 s 2-source cases: (references (2, L), mixture (L,), {row: estimates (2, L)})."""
    from ial.demo.corpus import CLASSES, synthesize_audio
    from ial.evaluate.oracle import oracle_estimates
    from ial.signal import CLIP_SAMPLES, SAMPLE_RATE

    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        a, b = rng.choice(len(CLASSES), 2, replace=False)
        refs = np.stack([synthesize_audio(CLASSES[c], CLIP_SAMPLES / SAMPLE_RATE, SAMPLE_RATE,
                                          seed=100 * i + c) for c in (a, b)]).astype(np.float64)
        mixture = refs.sum(0)
        leak = rng.uniform(0.05, 0.4)
        model = (1 - leak) * refs + leak * refs[::-1] + 0.01 * rng.standard_normal(refs.shape)
        oracles = oracle_estimates(["oracle_irm", "oracle_ibm"], refs, mixture)
        cases.append((refs, mixture, {"model": model, **{k: v[0] for k, v in oracles.items()}}))
    return cases


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 mixtures instead of 16")
    args = parser.parse_args(argv)

    import mir_eval
    import torch

    from ial.evaluate.metrics import bss_eval_fixed, score_mixture

    torch.set_num_threads(1)
    cases = make_cases(4 if args.quick else 16)
    rows = ["model", "oracle_irm", "oracle_ibm", "mixture"]
    print(f"{len(cases)} mixtures × {len(rows)} rows, 2 sources, 10 s @ 11025 Hz "
          f"(mir_eval {mir_eval.__version__}, numpy {np.__version__})")

    score_mixture(*cases[0][:2], cases[0][2])  # warm-up (imports, FFT plans)
    t0 = time.perf_counter()
    ours = [score_mixture(refs, mix, ests) for refs, mix, ests in cases]
    t_ours = time.perf_counter() - t0

    theirs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        t0 = time.perf_counter()
        for refs, mix, ests in cases:
            sets = {**ests, "mixture": np.stack([mix, mix])}
            theirs.append({r: mir_eval.separation.bss_eval_sources(
                refs, sets[r], compute_permutation=False)[:3] for r in rows})
        t_mir = time.perf_counter() - t0

    max_diff = {"sdr": 0.0, "sir": 0.0, "sar": 0.0}
    for (refs, mix, ests), o, m in zip(cases, ours, theirs):
        sets = {**ests, "mixture": np.stack([mix, mix])}
        raw = {r: bss_eval_fixed(refs, sets[r]) for r in rows}  # unclipped, as mir_eval
        for r in rows:
            assert np.allclose(o[r]["sdr"], raw[r][0])  # the clipped SDRs are the raw ones here
            for k, key in enumerate(("sdr", "sir", "sar")):
                a, b = raw[r][k], m[r][k]
                finite = np.isfinite(a) & np.isfinite(b) & (np.abs(b) < 100)
                if finite.any():
                    max_diff[key] = max(max_diff[key], float(np.max(np.abs(a - b)[finite])))

    # For reference: the model row alone (one estimate set per call on both sides).
    from ial.evaluate.metrics import bss_eval_fixed as ours_fixed

    t0 = time.perf_counter()
    for refs, _, ests in cases:
        ours_fixed(refs, ests["model"])
    t_ours_one = time.perf_counter() - t0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        t0 = time.perf_counter()
        for refs, _, ests in cases:
            mir_eval.separation.bss_eval_sources(refs, ests["model"], compute_permutation=False)
        t_mir_one = time.perf_counter() - t0

    speedup = t_mir / t_ours
    print(f"model row alone (one set per call on both sides): ours {t_ours_one:.3f} s, "
          f"mir_eval {t_mir_one:.3f} s, ratio {t_mir_one / t_ours_one:.2f}")
    print(f"ours (score_mixture, all rows per call): {t_ours:.3f} s "
          f"({1000 * t_ours / len(cases):.1f} ms/mixture)")
    print(f"mir_eval bss_eval_sources (one call per row): {t_mir:.3f} s "
          f"({1000 * t_mir / len(cases):.1f} ms/mixture)")
    print("max |ΔSDR| = {sdr:.2e} dB, max |ΔSIR| = {sir:.2e} dB, max |ΔSAR| = {sar:.2e} dB "
          "(finite values below 100 dB)".format(**max_diff))
    print(f"RESULT metrics_speedup={speedup:.2f} target>=5")
    return speedup


if __name__ == "__main__":
    main()
