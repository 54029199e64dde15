"""The evaluation report: results.json, results.csv, PNG figures, WAV stems, report.html.

Everything is written into a local directory first (``write_report``); ``evaluate`` then
uploads the files one by one (each atomically) to the report URL, ``results.json`` last, so a
report whose ``results.json`` exists is complete.

Files (docs/evaluation.md says how to read them):

- ``results.json`` — the summary (``rows``, ``per_class``, ``counts``, protocol, metric notes,
  checkpoint lineage) plus every mixture's per-source scores (``mixtures``);
- ``results.csv`` — one line per (mixture, source, row): clip, class, SDR/SIR/SAR/SDRi in dB;
- ``per_class_sdr.png`` — per-class mean SDR of every row (grouped bars);
- ``pair_sdri.png`` — the model's mean SDRi per (class, other class in the mixture), a heat map;
- ``example_<i>.png`` — mixture / reference / estimate spectrograms and masks of example ``i``;
- ``stems/example_<i>/{mixture,reference_<k>_<class>,<row>_<k>_<class>}.wav`` — float WAV,
  11025 Hz;
- ``report.html`` — the tables, the figures and audio players for the stems.
"""

from __future__ import annotations

import csv
import html
import json
import os
from dataclasses import dataclass, field

import numpy as np

from ial.evaluate.masks import MASK_MEASURES
from ial.signal import SAMPLE_RATE

METRICS = ("sdr", "sir", "sar", "sdri")


@dataclass
class Example:
    """One mixture kept for figures and stems.

    mixture (L,), references (N, L), estimates {row: (N, L)} samples @ 11025 Hz;
    masks {row: (N, F, T)} (the model's is its effective mask |estimate| / |mixture| on the log
    grid); labels / clip_ids: N strings.
    """

    index: int
    labels: tuple[str, ...]
    clip_ids: tuple[str, ...]
    mixture: np.ndarray
    references: np.ndarray
    estimates: dict[str, np.ndarray]
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def _fmt(x: float | None, width: int = 7, digits: int = 2) -> str:
    return f"{x:{width}.{digits}f}" if isinstance(x, (int, float)) else f"{'-':>{width}}"


def format_table(results: dict) -> str:
    """Overall table (rows × SDR/SIR/SAR/SDRi, dB, and the mask measures of
    ``ial.evaluate.masks``: own / other / shared, fractions) of an ``evaluate`` result, as
    text."""
    counts = results.get("counts", {})
    lines = [f"{'row':<18}{'SDR':>8}{'SIR':>8}{'SAR':>8}{'SDRi':>8}{'n':>7}"
             f"{'own':>8}{'other':>8}{'shared':>8}"]
    for name, row in results["rows"].items():
        scores = " ".join(_fmt(row.get(m)) for m in METRICS)
        masks = " ".join(_fmt(row.get(m), digits=3) for m in MASK_MEASURES)
        lines.append(f"{name:<18} {scores}{row.get('n', 0):>7} {masks}")
    lines.append(
        f"(dB, mean over sources; {counts.get('evaluated', 0)} of {counts.get('mixtures', 0)} "
        f"{results.get('protocol', {}).get('mix', '?')}-source mixtures scored, "
        f"{counts.get('skipped_silent', 0)} skipped for a silent reference)")
    if counts.get("resumed"):
        lines.append(f"({counts['resumed']} of the mixtures were scored by an earlier run that "
                     f"was stopped, and reused: same checkpoint and settings)")
    lines.append("(own, other, shared: what a mask keeps of its source's bins, of another "
                 "source's, and all masks of the shared ones; fractions, docs/evaluation.md)")
    return "\n".join(lines)


def format_markdown(results: dict) -> str:
    """The overall and per-class tables as Markdown (used for the Prefect artifact)."""
    rows = results["rows"]
    out = ["| row | SDR | SIR | SAR | SDRi | n |", "|---|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        out.append(f"| {name} | " + " | ".join(_fmt(row.get(m), 0) for m in METRICS)
                   + f" | {row.get('n', 0)} |")
    out += ["", "Per class, SDR (dB):", "",
            "| class | " + " | ".join(rows) + " |", "|---|" + "---:|" * len(rows)]
    for label, per_row in results.get("per_class", {}).items():
        out.append(f"| {label} | " + " | ".join(_fmt(per_row.get(r, {}).get("sdr"), 0)
                                             for r in rows) + " |")
    counts = results.get("counts", {})
    out += ["", f"{counts.get('evaluated', 0)} of {counts.get('mixtures', 0)} mixtures scored "
            f"({counts.get('skipped_silent', 0)} skipped: silent reference). "
            f"Report: {results.get('report_dir')}"]
    return "\n".join(out)


def write_csv(path: str, mixtures: list[dict]) -> None:
    """One line per (mixture, source, row)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mixture", "source", "clip_id", "label", "row", *METRICS])
        for m in mixtures:
            if m.get("scores") is None:
                continue
            for row, scores in m["scores"].items():
                for k, (clip, label) in enumerate(zip(m["clip_ids"], m["labels"])):
                    w.writerow([m["index"], k, clip, label, row,
                                *(f"{scores[x][k]:.4f}" for x in METRICS)])


def _spectrogram_db(wave: np.ndarray) -> np.ndarray:
    import torch

    from ial.signal import log_magnitude

    mag = log_magnitude(torch.as_tensor(np.asarray(wave), dtype=torch.float32)).numpy()
    return 20.0 * np.log10(np.maximum(mag, 1e-5))


def plot_per_class(path: str, results: dict) -> None:
    """Grouped bar chart: per-class mean SDR of each row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(results["per_class"])
    rows = list(results["rows"])
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(min(max(6.0, 1.2 * len(classes) + 2), 40.0), 4), dpi=90)
    x = np.arange(len(classes))
    for r, row in enumerate(rows):
        vals = [results["per_class"][c].get(row, {}).get("sdr", np.nan) for c in classes]
        ax.bar(x + (r - (len(rows) - 1) / 2) * width, vals, width, label=row)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(classes, rotation=30 if len(classes) <= 30 else 90, ha="right",
                       fontsize=9 if len(classes) <= 30 else 5)
    ax.set_ylabel("SDR (dB)")
    ax.set_title("Mean SDR per class")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_pair_sdri(path: str, per_pair: dict) -> None:
    """Heat map: row = the class separated, column = the other class in its mixtures, value = the
    model's mean SDRi (dB). Blocks near 0 dB show classes the model cannot tell apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = sorted(set(per_pair) | {o for others in per_pair.values() for o in others})
    grid = np.full((len(classes), len(classes)), np.nan)
    for i, c in enumerate(classes):
        for j, o in enumerate(classes):
            grid[i, j] = per_pair.get(c, {}).get(o, {}).get("sdri", np.nan)
    side = min(max(5.0, 0.45 * len(classes) + 3), 40.0)
    fig, ax = plt.subplots(figsize=(side + 1, side), dpi=90)
    limit = max(float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0, 1.0)
    image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit)
    if len(classes) <= 20:
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7)
    small = 9 if len(classes) <= 30 else 5
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=small)
    ax.set_yticks(range(len(classes)))
    ax.set_yticklabels(classes, fontsize=small)
    ax.set_xlabel("other class in the mixture")
    ax.set_ylabel("class separated")
    ax.set_title("Model SDRi (dB) by class pair")
    fig.colorbar(image, ax=ax, label="SDRi (dB)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def mask_colour_max(mask: np.ndarray) -> float:
    """Top of a mask's colour scale (from 0): 1, or the 99.5th percentile of its values where
    that is higher (an unbounded relu head, whose scale SI-SNR leaves free, or an estimate
    louder than the mixture where the sources cancel), so such bins are not all drawn as 1."""
    return max(1.0, float(np.percentile(mask, 99.5)))


def plot_example(path: str, ex: Example, model_row: str = "model") -> None:
    """Mixture spectrogram on top; per source: reference, model estimate, model mask, oracle
    mask."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = ex.references.shape[0]
    mask_rows = [r for r in ex.masks if r != model_row][:1]
    cols = 3 + len(mask_rows)
    fig, axes = plt.subplots(n + 1, cols, figsize=(3.2 * cols, 2.4 * (n + 1)), dpi=80,
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    mix_db = _spectrogram_db(ex.mixture)
    vmax = float(mix_db.max())
    vmin = vmax - 80.0
    # The model's mask gets its own scale when it exceeds 1; the oracles' masks are in [0, 1].
    model_max = mask_colour_max(ex.masks[model_row]) if model_row in ex.masks else 1.0
    model_title = "model mask |est|/|mix|" + (
        f" (colour 0 to {model_max:.2f})" if model_max > 1.0 else "")

    def show(ax, img, title, mask_max=None):
        ax.axis("on")
        mask = mask_max is not None
        ax.imshow(img, origin="lower", aspect="auto", cmap="magma" if not mask else "viridis",
                  vmin=0.0 if mask else vmin, vmax=mask_max if mask else vmax)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])

    show(axes[0, 0], mix_db, "mixture (log-freq, dB)")
    for k in range(n):
        label = ex.labels[k]
        show(axes[k + 1, 0], _spectrogram_db(ex.references[k]), f"reference {k}: {label}")
        if model_row in ex.estimates:
            show(axes[k + 1, 1], _spectrogram_db(ex.estimates[model_row][k]), f"model estimate {k}")
        if model_row in ex.masks:
            show(axes[k + 1, 2], ex.masks[model_row][k], model_title, model_max)
        for j, row in enumerate(mask_rows):
            show(axes[k + 1, 3 + j], ex.masks[row][k], f"{row} mask", 1.0)
    fig.suptitle(f"example {ex.index}: " + " + ".join(ex.labels), fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:40]


def write_stems(directory: str, ex: Example) -> list[str]:
    """Float WAV files of the mixture, the references and every row's estimates; relative paths."""
    import soundfile as sf

    os.makedirs(directory, exist_ok=True)
    names = []

    def write(name: str, wave: np.ndarray) -> None:
        sf.write(os.path.join(directory, name), np.asarray(wave, np.float32), SAMPLE_RATE,
                 subtype="FLOAT")
        names.append(name)

    write("mixture.wav", ex.mixture)
    for k, label in enumerate(ex.labels):
        write(f"reference_{k}_{_safe(label)}.wav", ex.references[k])
    for row, est in ex.estimates.items():
        for k, label in enumerate(ex.labels):
            write(f"{row}_{k}_{_safe(label)}.wav", est[k])
    return names


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_html(path: str, results: dict, examples: list[tuple[Example, str, list[str]]]) -> None:
    """report.html: overall + per-class tables, the bar chart, example figures and stems."""
    rows = results["rows"]
    overall = _html_table(["row", "SDR", "SIR", "SAR", "SDRi", "sources", "mask: own", "other",
                           "shared"],
                          [[n, *(_fmt(r.get(m), 0) for m in METRICS), str(r.get("n", 0)),
                            *(_fmt(r.get(m), 0, 3) for m in MASK_MEASURES)]
                           for n, r in rows.items()])
    per_class = _html_table(
        ["class", *(f"{r} SDR" for r in rows), "sources"],
        [[c, *(_fmt(pc.get(r, {}).get("sdr"), 0) for r in rows),
          str(next(iter(pc.values()), {}).get("n", 0))]
         for c, pc in results["per_class"].items()])
    counts = results["counts"]
    proto = results["protocol"]
    ck = results["checkpoint"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>IAL evaluation</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
        "</style></head><body>",
        "<h1>IAL evaluation report</h1>",
        f"<p>Checkpoint <code>{html.escape(str(ck.get('url')))}</code> (model "
        f"{html.escape(str(ck.get('model_name')))}, run {html.escape(str(ck.get('run')))}, step "
        f"{html.escape(str(ck.get('step')))}, sha256 "
        f"<code>{html.escape(str(ck.get('sha256'))[:16])}</code>); data "
        f"<code>{html.escape(str(results['data']))}</code> split "
        f"{html.escape(proto['split'])}.</p>",
        f"<p>Protocol: all {proto['combinations']} combinations of {proto['mix']} distinct classes"
        f" × up to {proto['n_per_combination']} mixtures (seed {proto['seed']}); full "
        f"{proto['clip_seconds']:.0f} s clips, model applied with a sliding window. "
        f"{counts['evaluated']} of {counts['mixtures']} mixtures scored; "
        f"{counts['skipped_silent']} skipped because a reference is silent "
        f"(RMS &lt; {results['metric']['silent_db']} dBFS)"
        + (f"; {counts['resumed']} scored by an earlier run that was stopped, and reused"
           if counts.get("resumed") else "") + ".</p>",
        f"<p>Metrics: {html.escape(results['metric']['implementation'])}; fixed assignment "
        "(no permutation search); SDRi = SDR − SDR of the mixture; scores clipped to ±"
        f"{results['metric']['clamp_db']:.0f} dB. Mask measures (fractions): what a source's "
        "effective mask keeps of the bins its source owns (own, ideal 1) and of the bins another "
        "source owns (other, ideal 0), and what all masks keep of the shared bins (shared, the "
        "IRM's is 1). See docs/evaluation.md.</p>",
        "<h2>Overall (dB, mean over sources)</h2>", overall,
        "<h2>Per class (mean SDR, dB)</h2>", per_class,
        "<img src='per_class_sdr.png' alt='per-class SDR'>",
        "<h2>Per class pair (model SDRi, dB)</h2>",
        "<p>Row: the class separated; column: the other class in its mixtures. A block of pairs "
        "near 0 dB is a group of classes the model does not tell apart.</p>",
        "<img src='pair_sdri.png' alt='SDRi per class pair'>",
        "<h2>Examples</h2>",
    ]
    for ex, figure, stems in examples:
        parts.append(f"<h3>Example {ex.index}: {html.escape(' + '.join(ex.labels))}</h3>")
        parts.append(f"<p>clips: {html.escape(', '.join(ex.clip_ids))}</p>")
        parts.append(f"<img src='{figure}' alt='example {ex.index}'>")
        parts.append("<ul>")
        for stem in stems:
            parts.append(f"<li>{html.escape(stem.rsplit('/', 1)[1])}: <audio controls "
                         f"preload='none' src='{html.escape(stem)}'></audio></li>")
        parts.append("</ul>")
    parts.append("<p>Raw numbers: <a href='results.json'>results.json</a>, "
                 "<a href='results.csv'>results.csv</a>.</p></body></html>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))


def write_report(directory: str, results: dict, mixtures: list[dict],
                 examples: list[Example]) -> list[str]:
    """Write every report file into local ``directory``; returns relative paths, results.json
    last."""
    os.makedirs(directory, exist_ok=True)
    files: list[str] = []
    write_csv(os.path.join(directory, "results.csv"), mixtures)
    files.append("results.csv")
    if results["per_class"]:
        plot_per_class(os.path.join(directory, "per_class_sdr.png"), results)
        files.append("per_class_sdr.png")
    if results.get("per_pair"):
        plot_pair_sdri(os.path.join(directory, "pair_sdri.png"), results["per_pair"])
        files.append("pair_sdri.png")
    rendered = []
    for ex in examples:
        figure = f"example_{ex.index}.png"
        plot_example(os.path.join(directory, figure), ex)
        stem_dir = f"stems/example_{ex.index}"
        stems = [f"{stem_dir}/{n}" for n in write_stems(os.path.join(directory, stem_dir), ex)]
        files += [figure, *stems]
        rendered.append((ex, figure, stems))
    write_html(os.path.join(directory, "report.html"), results, rendered)
    files.append("report.html")
    with open(os.path.join(directory, "results.json"), "w") as f:
        json.dump({**results, "mixtures": mixtures}, f, indent=1)
    files.append("results.json")
    return files
