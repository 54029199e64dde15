"""Two models compared source by source on the same evaluation mixtures: ``ial compare``.

Two reports of ``ial evaluate`` on one protocol (the same split, ``--mix``, ``--n``, seed and clip
length, so the same mixtures) score every test source with both models. The difference of their
means is then a *paired* difference: each source is compared with itself, and its 95 %
bootstrap interval resamples the sources (``paired_ci``). With several trainings of each model
(one report per seed) the interval resamples the trainings too (``across_seeds_ci``): two
trainings of one config differ by more than one training's paired interval covers.

Sources are keyed ``(mixture index, source position)``; a source one report skipped (a silent
reference) is left out of the difference. Only the training window may differ between the two
reports (each model is applied with the window it was trained on).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from ial.errors import UserError
from ial.evaluate.masks import MASK_MEASURES
from ial.evaluate.report import METRICS
from ial.storage import upload_file

# what can be compared: the scores (dB) and the mask measures (fractions, ial.evaluate.masks)
MEASURES = (*METRICS, *MASK_MEASURES)
# protocol fields that decide which mixtures are scored: two reports must agree on all of them
SAME_MIXTURES = ("split", "mix", "n_per_combination", "seed", "max_mixtures", "clip_seconds",
                 "sample_rate")

Sources = dict[tuple[int, int], float]


def per_source(report: dict, row: str = "model", metric: str = "sdr") -> Sources:
    """(mixture index, source position) → ``metric`` (one of ``MEASURES``) of ``row`` in an
    evaluation report's ``mixtures``; skipped mixtures (no scores) and None values (a mask
    measure over no bin) are left out."""
    out = {}
    for m in report["mixtures"]:
        if m["scores"]:
            for i, v in enumerate(m["scores"][row][metric]):
                if v is not None:
                    out[(m["index"], i)] = v
    return out


def source_labels(report: dict) -> dict[tuple[int, int], str]:
    """(mixture index, source position) → the source's class label."""
    return {(m["index"], i): label for m in report["mixtures"]
            for i, label in enumerate(m["labels"])}


def source_differences(a: Sources, b: Sources) -> np.ndarray:
    """a − b per source, over the sources both scored (sorted by key). Shape: (sources,), dB."""
    return np.array([a[k] - b[k] for k in sorted(set(a) & set(b))])


def paired_ci(a: Sources, b: Sources, seed: int = 0, n: int = 10000) -> tuple[float, float, float]:
    """Mean of a − b over the sources both scored, and its 95 % paired bootstrap interval."""
    d = source_differences(a, b)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), (n, len(d)))].mean(axis=1)
    return float(d.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def across_seeds_ci(a: list[Sources], b: list[Sources], seed: int = 0,
                    n: int = 10000) -> tuple[float, float, float]:
    """Several trainings (one per seed) of two models: the mean over trainings of the mean
    a − b over the sources both scored, and its 95 % two-level bootstrap interval. Each draw
    resamples the trainings, then each chosen training's sources, so the interval covers the
    spread between trainings of one config as well as between test sources (``paired_ci``
    covers only the latter). With few trainings it is wide, as it should be."""
    diffs = [source_differences(x, y) for x, y in zip(a, b)]
    rng = np.random.default_rng(seed)
    inner = np.stack([d[rng.integers(0, len(d), (n, len(d)))].mean(axis=1) for d in diffs])
    picks = rng.integers(0, len(diffs), (n, len(diffs)))
    boots = inner[picks, rng.integers(0, n, (n, len(diffs)))].mean(axis=1)
    return (float(np.mean([d.mean() for d in diffs])), float(np.percentile(boots, 2.5)),
            float(np.percentile(boots, 97.5)))


def load_report(url: str) -> dict:
    """An evaluation report's ``results.json`` (``url``: the report directory or the file, local
    or s3://). A missing or unfinished report is a UserError naming it."""
    from ial.storage import exists, join, read_text

    path = url if url.endswith(".json") else join(url, "results.json")
    if not exists(path):
        raise UserError(f"{url}: no results.json (not an evaluation report, or one that did not "
                        "finish: `ial evaluate` writes results.json last)")
    try:
        report = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if "mixtures" not in report or "protocol" not in report:
        raise UserError(f"{path}: has no per-mixture scores ('mixtures', 'protocol'); "
                        "re-run `ial evaluate` to write them")
    return report


def check_same_mixtures(first: tuple[str, dict], other: tuple[str, dict]) -> None:
    """UserError naming the first protocol field on which two reports differ (so they did not
    score the same mixtures), or whose mixtures are of other clips."""
    (name_a, a), (name_b, b) = first, other
    for key in SAME_MIXTURES:
        if a["protocol"].get(key) != b["protocol"].get(key):
            raise UserError(f"{name_a} and {name_b} scored different mixtures: protocol "
                            f"{key!r} is {a['protocol'].get(key)!r} against "
                            f"{b['protocol'].get(key)!r}; compare reports of one protocol")
    clips_b = {m["index"]: m["clip_ids"] for m in b["mixtures"]}
    for m in a["mixtures"]:
        if m["index"] in clips_b and list(m["clip_ids"]) != list(clips_b[m["index"]]):
            raise UserError(f"{name_a} and {name_b} scored different mixtures: mixture "
                            f"{m['index']} is {m['clip_ids']} against {clips_b[m['index']]} "
                            "(another dataset?)")


@dataclass
class Comparison:
    """A − B of one metric (dB): overall and per class, each (mean, 95 % low, 95 % high)."""

    metric: str
    row: str
    trainings: int  # report pairs (seeds); > 1: two-level intervals
    sources: int  # sources scored by both, over all pairs
    mean_a: float
    mean_b: float
    overall: tuple[float, float, float]
    per_class: dict[str, tuple[float, float, float]]


def compare_reports(pairs: list[tuple[str, str]], metric: str = "sdr", row: str = "model",
                    seed: int = 0) -> Comparison:
    """Compare models A and B from ``pairs`` of report URLs (A's, B's): one pair per training
    seed. Every report must have scored the same mixtures."""
    if metric not in MEASURES:
        raise UserError(f"--metric {metric!r}: one of {', '.join(MEASURES)}")
    reports = [(load_report(a), load_report(b)) for a, b in pairs]
    named = [(url, r) for pair, loaded in zip(pairs, reports) for url, r in zip(pair, loaded)]
    for other in named[1:]:
        check_same_mixtures(named[0], other)
    for url, r in named:
        if row not in r.get("rows", {}):
            raise UserError(f"{url}: no scores of row {row!r} (rows: "
                            f"{', '.join(r.get('rows', {})) or 'none'})")
        if metric not in r["rows"][row]:
            raise UserError(f"{url}: no {metric!r} in row {row!r} (a report written before "
                            "the mask measures; re-run `ial evaluate` to write them)")
    a = [per_source(ra, row, metric) for ra, _ in reports]
    b = [per_source(rb, row, metric) for _, rb in reports]
    shared = [sorted(set(x) & set(y)) for x, y in zip(a, b)]
    if not all(shared):
        raise UserError("no source was scored by both reports of a pair")
    labels = source_labels(reports[0][0])
    per_class = {}
    for label in sorted(set(labels.values())):
        of_class = [{k: v for k, v in x.items() if labels.get(k) == label} for x in a]
        if all(set(x) & set(y) for x, y in zip(of_class, b)):
            per_class[label] = across_seeds_ci(of_class, b, seed)
    return Comparison(
        metric=metric, row=row, trainings=len(pairs), sources=sum(map(len, shared)),
        mean_a=float(np.mean([x[k] for x, ks in zip(a, shared) for k in ks])),
        mean_b=float(np.mean([y[k] for y, ks in zip(b, shared) for k in ks])),
        overall=across_seeds_ci(a, b, seed), per_class=per_class)


def format_comparison(c: Comparison, name_a: str = "A", name_b: str = "B") -> str:
    """The comparison as text: overall line, then one line per class. Mask measures, fractions,
    get three decimals."""
    kind = ("paired bootstrap" if c.trainings == 1
            else f"two-level bootstrap over {c.trainings} trainings")
    mean, lo, hi = c.overall
    u, d = (" dB", 2) if c.metric in METRICS else ("", 3)
    lines = [f"{c.metric.upper()} of row {c.row!r}, {c.sources} sources scored by both: "
             f"{name_a} {c.mean_a:.{d}f}{u}, {name_b} {c.mean_b:.{d}f}{u}",
             f"{name_a} - {name_b}: {mean:+.{d}f}{u}, 95 % {kind} CI "
             f"[{lo:+.{d}f}, {hi:+.{d}f}]",
             "per class (the class of the source scored):"]
    width = max((len(k) for k in c.per_class), default=5)
    for label, (m, lo, hi) in c.per_class.items():
        lines.append(f"  {label:<{width}}  {m:+6.{d}f}  [{lo:+.{d}f}, {hi:+.{d}f}]")
    return "\n".join(lines)


def plot_comparison(path: str, c: Comparison, name_a: str = "A", name_b: str = "B") -> None:
    """Forest plot: the overall difference and each class's, with their 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["all sources"] + list(c.per_class)
    values = [c.overall] + list(c.per_class.values())
    y = np.arange(len(names))[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.4), dpi=90)
    for yi, (m, lo, hi), name in zip(y, values, names):
        ax.errorbar(m, yi, xerr=[[m - lo], [hi - m]], fmt="o", capsize=3,
                    color="black" if name == "all sources" else "tab:blue")
    ax.axvline(0.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=9)
    scale = " (dB)" if c.metric in METRICS else " (fraction)"
    ax.set_xlabel(f"{name_a} - {name_b}, {c.metric.upper()}{scale}, 95 % CI")
    ax.set_title(f"{name_a} vs {name_b} on the same mixtures ({c.sources} sources)", fontsize=10)
    fig.tight_layout()
    with tempfile.TemporaryDirectory(prefix="ial-compare-") as tmp:
        local = os.path.join(tmp, "plot" + (os.path.splitext(path)[1] or ".png"))
        fig.savefig(local)
        plt.close(fig)
        upload_file(local, path)  # local or s3://, complete or not there at all
