"""Prefect flow ``train``: a thin wrapper over ``ial.training.launcher.launch`` (docs/training.md).

The training job runs as its own process(es) (one CPU process, or the ``deepspeed`` launcher for
``num_procs`` > 1); the flow records the checkpoint it produced as a link artifact
``train-checkpoint`` and a markdown summary ``train-summary``. A crashed job is retried once:
training resumes from its last committed checkpoint.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from flows.api import fail_on_user_error, retry_unless_user_error

DEFAULT_CONFIG = "configs/train/default.yaml"


@task(name="train-job", retries=1, retry_delay_seconds=5,
      retry_condition_fn=retry_unless_user_error)
def train_job(cfg, num_procs: int, progress: bool = False) -> dict:
    """Launch the training job and wait for it (resumes from the run's last checkpoint)."""
    from ial.training.launcher import launch

    return launch(cfg, num_procs=num_procs, progress=progress)


def summary_markdown(result: dict) -> str:
    """The run's result as a markdown table."""
    rows = [("run", result["run"]), ("steps", result["step"]),
            ("processes", result.get("world_size")), ("checkpoint", result["checkpoint"]),
            ("best checkpoint", result.get("best_checkpoint")),
            ("best val SDR (dB)", result.get("best_val_sdr")),
            ("resumed from step", result.get("resumed_from_step")),
            *[(k, v) for k, v in sorted(result.get("metrics", {}).items())]]
    lines = ["# Training run", "", "| item | value |", "|---|---|"]
    lines += [f"| {k} | {v if v is not None else '—'} |" for k, v in rows]
    return "\n".join(lines) + "\n"


@flow(name="train")
@fail_on_user_error
def train_flow(root: str = "./data", dataset: str = "vggsound", config: str | None = None,
               overrides: list[str] | None = None, num_procs: int = 1,
               resume_from: str | None = None, progress: bool = False) -> dict:
    """Train on ``<root>/shards/<dataset>`` with ``config`` (a TrainConfig YAML, default
    configs/train/default.yaml); ``overrides`` (``key=value``) win over it.

    ``resume_from``: a model.pt (or run directory) to warm-start the separator from (e.g. the
    champion, for nightly retraining); the run itself still resumes exactly from its own last
    checkpoint when restarted. ``progress``: show the job's progress bar on the console (off for
    deployments, whose logs are not a terminal). Returns the trainer's result: ``checkpoint``
    (model.pt URL), ``best_checkpoint``, ``metrics`` (validation), ``step``, ``run_dir``.
    """
    from ial.training.config import load_train_config

    values = {"root": root, "dataset": dataset}
    if resume_from:
        values["init_from"] = resume_from
    cfg = load_train_config(config or DEFAULT_CONFIG, overrides or (), **values)
    result = train_job(cfg, num_procs, progress)
    logger = get_run_logger()
    logger.info("Training run %s: step %s, checkpoint %s, val %s", result["run"], result["step"],
                result["checkpoint"], result.get("metrics"))
    create_link_artifact(key="train-checkpoint", link=result["checkpoint"],
                         link_text=f"model.pt of run {result['run']}",
                         description=f"Model export produced by training run {result['run']}")
    create_markdown_artifact(key="train-summary", markdown=summary_markdown(result),
                             description=f"Training run {result['run']}")
    return result
