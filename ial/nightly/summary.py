"""One night's scores and its summary: the overall SDR of an evaluation, the paired interval of
the challenger's gain over the champion, the last night's training data, the markdown table (the
Prefect artifact and ``retrain/<timestamp>.md``)."""

from __future__ import annotations

import logging
import math

from ial.errors import UserError
from ial.nightly.promotion import list_promotions
from ial.storage import Storage

log = logging.getLogger(__name__)


def overall_sdr(results: dict) -> float:
    """The model's overall mean SDR (dB) in an evaluation result (``results["sdr"]``)."""
    value = results.get("sdr")
    if not isinstance(value, (int, float)):
        raise KeyError(f"no overall 'sdr' in the evaluation result (keys: {sorted(results)})")
    return float(value)


def last_trained_fingerprint(root: Storage | str, dataset: str) -> str | None:
    """The training-data fingerprint of the latest recorded nightly decision for ``dataset``."""
    for record in reversed(list_promotions(root)):
        if record.get("dataset") == dataset and record.get("train_fingerprint"):
            return record["train_fingerprint"]
    return None


def paired_gain(challenger_report: str | None, champion_report: str | None,
                logger: logging.Logger | logging.LoggerAdapter = log,
                ) -> tuple[float, float, float] | None:
    """Challenger − champion SDR source by source on the same mixtures: (mean, 95 % low, high),
    or None (a warning on ``logger``) when a report is missing or the two scored different
    mixtures."""
    from ial.evaluate.compare import compare_reports  # (torch: only when there is a gain)

    if not (challenger_report and champion_report):
        return None
    try:
        return compare_reports([(challenger_report, champion_report)]).overall
    except UserError as exc:
        logger.warning("No paired interval of the gain: %s", exc)
        return None


def format_gain(gain_ci) -> str | None:
    """``+0.31 [+0.02, +0.60]`` for a (mean, low, high) interval in dB; None without one."""
    if not gain_ci:
        return None
    mean, lo, hi = gain_ci
    return f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def count_note(result: dict | None, keys: tuple[str, ...]) -> str:
    """``new=3, ok=40`` from a stage's result dict (the keys it has, in order), else "done"."""
    if not isinstance(result, dict):
        return "done"
    parts = [f"{k}={result[k]}" for k in keys if isinstance(result.get(k), (int, float, str))]
    return ", ".join(parts) or "done"


def render_summary(summary: dict) -> str:
    """The night as a markdown table (the Prefect artifact and ``retrain/<timestamp>.md``)."""

    def fmt(value) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:.3f}" if math.isfinite(value) else str(value)
        return str(value).replace("|", "\\|")

    run = summary.get("run")
    if run and summary.get("train_resumed_from_step") is not None:
        run = f"{run} (run again: resumed at step {summary['train_resumed_from_step']})"
    rows = [
        ("dataset", summary.get("dataset")),
        ("started (UTC)", summary.get("started_at")),
        ("ingest", summary.get("ingest_note")),
        ("featurize", summary.get("featurize_note")),
        ("training data", summary.get("train_fingerprint")),
        ("resumed from", summary.get("resumed_from")),
        ("training run", run),
        ("challenger", summary.get("challenger")),
        ("challenger SDR (dB)", summary.get("challenger_sdr")),
        ("champion", summary.get("champion")),
        ("champion SDR (dB)", summary.get("champion_sdr")),
        ("gain, 95 % paired CI (dB)", format_gain(summary.get("gain_ci"))),
        ("decision", summary.get("decision")),
        ("reason", summary.get("reason")),
        ("skipped", "; ".join(summary.get("skipped", [])) or None),
    ]
    lines = [f"# Nightly retraining: {fmt(summary.get('decision'))}", "", "| item | value |",
             "|---|---|"]
    lines += [f"| {name} | {fmt(value)} |" for name, value in rows]
    return "\n".join(lines) + "\n"
