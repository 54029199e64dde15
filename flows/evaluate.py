"""Prefect flow ``evaluate``: a thin wrapper over ``ial.evaluate.evaluate`` (docs/evaluation.md)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.api import fail_on_user_error


@flow(name="evaluate")
@fail_on_user_error
def evaluate_flow(checkpoint: str, data: str, mix: int = 2, out: str | None = None,
                  config: str | None = None, overrides: list[str] | None = None) -> dict:
    """Score ``checkpoint`` on the test split of the shards dataset ``data``.

    ``config``: an EvalConfig YAML (e.g. configs/eval/default.yaml); explicit arguments win over
    it and ``overrides`` (``key=value``) win over both. Returns the evaluation summary (the model's
    overall SDR is ``result["sdr"]``); a markdown artifact ``evaluation`` holds the tables.
    """
    from ial.config import load_config
    from ial.evaluate import EvalConfig, evaluate, format_markdown, format_table

    cfg = load_config(EvalConfig, config, overrides or (), checkpoint=checkpoint, data=data,
                      mix=mix, out=out)
    results = evaluate(cfg, progress=False)
    get_run_logger().info("Evaluation of %s:\n%s", checkpoint, format_table(results))
    create_markdown_artifact(markdown=format_markdown(results), key="evaluation",
                             description=f"Evaluation of {checkpoint}")
    return results
