"""``ial info CHECKPOINT``: what a ``model.pt`` export says of itself."""

from __future__ import annotations

import json

import click


@click.command("info", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", metavar="CHECKPOINT")
@click.option("--json", "as_json", is_flag=True,
              help="Print the whole description as JSON instead: every config it trained with "
                   "(train, model, method, DeepSpeed, featurize), the shard list, versions, "
                   "lineage and metrics; everything but the weights.")
def command(checkpoint, as_json):
    """Say what a checkpoint is: model, run and step, the data it trained on, the machine and
    software, its validation metrics.

    \b
    CHECKPOINT is a `model.pt` export (local or s3://), e.g. checkpoints/<run>/best/model.pt.
    Nothing else is needed to read it: the export describes itself (docs/training.md).

    \b
    Examples:
      ial info data/checkpoints/demo/best/model.pt
      ial info s3://bucket/ial/checkpoints/nightly/champion/model.pt --json | jq .lineage.step
    """
    from ial.models.export import describe_export, read_export

    meta = read_export(checkpoint)
    meta["url"] = checkpoint
    if as_json:
        meta.pop("state_dict", None)
        click.echo(json.dumps(meta, indent=1, default=str))
    else:
        click.echo("\n".join(describe_export(meta)))
