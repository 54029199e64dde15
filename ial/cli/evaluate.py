"""``ial evaluate`` (= ``python -m ial.evaluate``): score a checkpoint on a shards dataset."""

from __future__ import annotations

from pathlib import Path

import click

from ial.cli.options import build_config, config_options

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "eval" / "default.yaml"


@click.command("evaluate", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--checkpoint", metavar="URL", help="model.pt export (local path or s3://...).")
@click.option("--data", metavar="URL",
              help="Shards dataset dir <root>/shards/<dataset> (local or s3://); its test split "
                   "is evaluated.")
@click.option("--mix", type=click.IntRange(min=2), default=None,
              help="Sources per mixture: 2 = all pairs of distinct classes, 3 = all triplets.")
@click.option("--n", "n_per_combination", type=click.IntRange(min=1), default=None,
              help="Mixtures per class combination (fixed seed).")
@click.option("--out", metavar="DIR", default=None,
              help="Report dir (local or s3://); default <root>/reports/<checkpoint run>/.")
@click.option("--device", default=None,
              help="torch device for the model: auto (the default: CUDA when visible), cpu, "
              "cuda:N.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@config_options(str(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else None,
                example="mix=3")
def command(checkpoint, data, mix, n_per_combination, out, device, no_progress, config_path,
            overrides):
    """Score a checkpoint: SDR/SIR/SAR and SDRi on the MUSIC-style protocol.

    \b
    Every combination of --mix distinct test classes × --n mixtures (fixed seed) of full 10 s
    clips is separated with a sliding window as long as the checkpoint's training window
    (--set window=SAMPLES to change it), one visual query per source, and scored with
    BSS Eval v3 (bss_eval_sources-compatible, float64, fixed assignment) beside the oracle
    masks (IRM/IBM on the model's log-frequency grid) and the mixture itself.
    Writes results.json, results.csv, report.html, PNG figures and WAV stems of a few examples
    to --out. See docs/evaluation.md for the protocol and how to read the report.

    \b
    Example:
      ial evaluate --checkpoint ./data/checkpoints/demo/model.pt --data ./data/shards/demo
    """
    from ial.evaluate import EvalConfig, evaluate, format_table

    cfg = build_config(EvalConfig, config_path, overrides, {"n_per_combination": "--n"},
                       checkpoint=checkpoint, data=data, mix=mix,
                       n_per_combination=n_per_combination, out=out, device=device)
    results = evaluate(cfg, progress=not no_progress)
    click.echo(format_table(results))
    click.echo(f"Report: {results['report_dir']}/report.html")
