"""``ial featurize``: clips → Parquet feature shards on Dask (the CLI of the ``featurize`` flow)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ial.cli.options import build_config, config_options, root_option

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "featurize" / "default.yaml"


@click.command("featurize", context_settings={"help_option_names": ["-h", "--help"]})
@root_option
@click.option("--dataset", default=None, help="Dataset name: reads clips/<dataset>/index, writes "
              "shards/<dataset>/ (default from config: vggsound).")
@click.option("--visual-weights", type=str, default=None, metavar="PATH",
              help="torchvision resnet18 ImageNet state_dict (.pth, local or s3://) for the frame "
                   "features. Without it the ResNet-18 is randomly initialised (seeded) and the "
                   "stats, shard metadata and this command say so.")
@click.option("--dask-address", default=None, metavar="tcp://HOST:PORT",
              help="Running Dask scheduler; default: a LocalCluster of --n-workers processes.")
@click.option("--n-workers", type=click.IntRange(min=1), default=None,
              help="LocalCluster worker processes (ignored with --dask-address).")
@click.option("--clips-per-shard", type=click.IntRange(min=1), default=None,
              help="Rows per Parquet shard (applies to shards not yet planned).")
@click.option("--prefect/--no-prefect", default=True, show_default=True,
              help="Run as the Prefect flow `featurize` (Dask task runner) or as a plain Dask job. "
                   "With --prefect and --dask-address the workers need PREFECT_API_URL of a real "
                   "Prefect server.")
@click.option("--no-progress", is_flag=True, help="No progress bar (plain Dask run).")
@config_options(str(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else None,
                example="batch_clips=16")
def command(root, dataset, visual_weights, dask_address, n_workers, clips_per_shard, prefect,
            no_progress, config_path, overrides):
    """Featurize the `ok` clips of the clip index into Parquet shards.

    \b
    Per clip: waveform (mono, 11025 Hz, 10 s, int16 PCM), the log-frequency spectrogram
    (STFT 1022/256 → 256 log bins, float16), K frames at fixed times (JPEG) and their frozen
    ResNet-18 feature maps (float16). Writes under --root:
      shards/<dataset>/shard-NNNNN.parquet        feature rows (preprocessing/shard_schema.py)
      shards/<dataset>/_stats/shard-NNNNN.json    per-shard stats; marks the shard complete
      shards/<dataset>/index.json                 shards, rows, per-split and per-class counts
    Clips are assigned to shards deterministically; complete shards are skipped, so re-running
    (or running again after new clips were ingested) only does the missing work. Clips that fail
    to decode are recorded with their reason in the shard stats.

    \b
    Examples:
      ial featurize --root ./data --dataset vggsound --visual-weights resnet18-f37072fd.pth
      ial featurize --root s3://bucket/ial --dataset audioset --dask-address tcp://dask:8786
      ial featurize --config configs/featurize/demo.yaml --set clips_per_shard=64 --no-prefect
    """
    from preprocessing.featurize.config import FeaturizeConfig
    from preprocessing.featurize.planning import check_inputs
    from preprocessing.featurize.shard_task import RANDOM_INIT_WARNING

    values = dict(root=root, dataset=dataset, visual_weights=visual_weights,
                  dask_address=dask_address, n_workers=n_workers, clips_per_shard=clips_per_shard)
    cfg = build_config(FeaturizeConfig, config_path, overrides, **values)
    if prefect:
        # a bad root, dataset or config hash: one line, before Prefect starts (the plain run's
        # plan_shards checks the same, first, and logs the random-weights warning after it)
        from flows.api import check_api
        from flows.featurize import featurize_flow
        from ial.config import to_dict

        check_inputs(cfg)
        check_api()
        if cfg.visual_weights is None:
            click.secho(f"WARNING: {RANDOM_INIT_WARNING}", fg="yellow", err=True)

        given = {k: v for k, v in to_dict(cfg).items()
                 if k not in ("root", "dataset", "dask_address")}
        summary = featurize_flow(root=cfg.root, dataset=cfg.dataset, config=None,
                                 overrides=[f"{k}={json.dumps(v)}" for k, v in given.items()],
                                 dask_address=cfg.dask_address)
    else:
        from preprocessing.featurize.run import featurize

        summary = featurize(cfg, progress=not no_progress)
    click.echo(json.dumps(summary, indent=1))
