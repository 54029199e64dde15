"""Evaluation: ``python -m ial.evaluate`` / ``ial evaluate`` (docs/evaluation.md).

``evaluate(cfg: EvalConfig, progress=True) -> dict`` scores a checkpoint on the MUSIC-style
protocol (SDR/SIR/SAR/SDRi, oracle rows, per-class tables, report); ``format_table(results)``
prints its overall table. The model's overall mean SDR is ``results["sdr"]``
(= ``results["rows"]["model"]["sdr"]``).
"""

from ial.evaluate.config import EvalConfig
from ial.evaluate.evaluate import EvaluationError, evaluate
from ial.evaluate.report import format_markdown, format_table

__all__ = ["EvalConfig", "EvaluationError", "evaluate", "format_markdown", "format_table"]
