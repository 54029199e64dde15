"""The ``ial`` command line: one subcommand per stage, each a thin wrapper over a library function.

Subcommands are imported lazily, so ``ial --help`` answers fast and a stage's heavy imports
(torch, deepspeed, prefect, dask) are only paid by the stage that needs them.
Each subcommand lives in ``ial/cli/<name>.py`` as a click command named ``command``.
"""

from __future__ import annotations

import importlib
import os

import click

# Prefect defaults for every `ial` command (and `python -m ial.evaluate`, which imports this
# package first), set before anything imports Prefect; the Makefile exports the same. Offline, the
# server's telemetry logs "Failed to send telemetry" on every run, and on a fresh PREFECT_HOME its
# heartbeat races the migrations ("database is locked") and prints tracebacks above the `Error:`
# line. setdefault: a user who exports either variable keeps their value.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

SUBCOMMANDS = {
    "demo": ("ial.cli.demo", "Generate the demo corpus and run all four stages end to end."),
    "ingest": ("ial.cli.ingest", "Download and slice clips from a manifest (yt-dlp + ffmpeg)."),
    "featurize": ("ial.cli.featurize",
                  "Clips → spectrograms, frames, frame features in Parquet shards (Dask)."),
    "train": ("ial.cli.train", "Train the separator + independency critic with DeepSpeed."),
    "evaluate": ("ial.cli.evaluate",
                 "Score a checkpoint: SDR/SIR/SAR, SDRi, oracle masks, report."),
    "compare": ("ial.cli.compare",
                "Compare two evaluation reports source by source, with a 95 % CI."),
    "separate": ("ial.cli.separate", "Separate the sounds of your own video(s) with a checkpoint."),
    "info": ("ial.cli.info", "Say what a checkpoint is: model, run, data, machine, metrics."),
    "serve": ("ial.cli.serve", "Serve the Prefect deployments (ingest/*, featurize, train, "
              "evaluate, retrain/nightly)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        from ial.cli.options import user_errors

        module = importlib.import_module(SUBCOMMANDS[name][0])
        return user_errors(module.command)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_, help_text) in SUBCOMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ial")
def main() -> None:
    """IAL: audio-visual sound separation (Independency Adversarial Learning, AAAI 2024).

    \b
    The pipeline, each stage reading and writing under one storage root (--root, default ./data,
    or s3://bucket/prefix):
      ingest     manifest → clips/<dataset>/*.mp4 + clip index
      featurize  clips → shards/<dataset>/*.parquet (Dask)
      train      shards → checkpoints/<run>/ (DeepSpeed)
      evaluate   checkpoint → reports/<run>/ (SDR/SIR/SAR)
    `ial compare` puts two reports side by side (paired 95 % CI of the difference);
    `ial separate` splits your own videos' sounds with a checkpoint; `ial info` says what a
    checkpoint is (model, run, data, machine, metrics);
    `ial demo` runs the four stages on a generated corpus; `ial serve` serves the Prefect
    deployments.
    Every stage takes --config FILE.yaml and repeated --set key=value overrides, and
    --print-config shows the config it would run with.
    """


if __name__ == "__main__":  # pragma: no cover
    main()
