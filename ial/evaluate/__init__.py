"""Evaluation: ``python -m ial.evaluate`` / ``ial evaluate`` (docs/evaluation.md).

``evaluate(cfg: EvalConfig, progress=True) -> dict`` scores a checkpoint on the MUSIC-style
protocol (SDR/SIR/SAR/SDRi, oracle rows, per-class tables, report); ``format_table(results)``
prints its overall table. The model's overall mean SDR is ``results["sdr"]``
(= ``results["rows"]["model"]["sdr"]``).

Names are imported lazily so that ``python -m ial.evaluate --help`` answers without torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "EvalConfig": "ial.evaluate.config",
    "EvaluationError": "ial.evaluate.pipeline",
    "evaluate": "ial.evaluate.pipeline",
    "format_table": "ial.evaluate.report",
    "format_markdown": "ial.evaluate.report",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ial.evaluate' has no attribute {name!r}")
