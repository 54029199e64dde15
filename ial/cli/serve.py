"""``ial serve``: serve every Prefect deployment of the project from one long-running process."""

from __future__ import annotations

import click

from flows.deployments import DEFAULT_CRON, DEFAULT_TIMEZONE, deployment_names


@click.command(name="serve")
@click.option("--only", multiple=True, metavar="NAME",
              help="Serve only this deployment (e.g. ingest/vggsound) or flow (e.g. ingest). "
              "Repeatable.")
@click.option("--cron", default=DEFAULT_CRON, show_default=True, envvar="IAL_RETRAIN_CRON",
              help="Cron schedule of retrain/nightly (env IAL_RETRAIN_CRON).")
@click.option("--timezone", default=DEFAULT_TIMEZONE, show_default=True,
              envvar="IAL_RETRAIN_TIMEZONE",
              help="Timezone of the cron schedule (env IAL_RETRAIN_TIMEZONE).")
@click.option("--root", default=None, metavar="URL", envvar="IAL_ROOT",
              help="Default storage root of every deployment: a directory or "
              "s3://bucket/prefix (env IAL_ROOT).")
@click.option("--dask-address", default=None, metavar="ADDR", envvar="IAL_DASK_ADDRESS",
              help="Default Dask scheduler for ingest/featurize/retrain, e.g. tcp://dask:8786 "
              "(env IAL_DASK_ADDRESS).")
@click.option("--retrain-config", default=None, type=click.Path(dir_okay=False),
              envvar="IAL_RETRAIN_CONFIG",
              help="YAML config of the nightly retraining (default "
              "configs/retrain/nightly.yaml; env IAL_RETRAIN_CONFIG).")
@click.option("--limit", default=None, type=int,
              help="Most flow runs executed at once by this process.")
@click.option("--list", "list_only", is_flag=True, help="Print the deployment names and exit.")
def command(only, cron, timezone, root, dask_address, retrain_config, limit, list_only):
    """Serve the deployments (ingest/vggsound, ingest/audioset, ingest/music, featurize/default,
    train/default, evaluate/default, retrain/nightly) until interrupted.

    \b
    Needs a Prefect API: PREFECT_API_URL=http://HOST:4200/api (see infra/). Then, from anywhere:
      prefect deployment run ingest/vggsound --param manifest=s3://bucket/vggsound.csv
    Runs execute in this process's environment: its AWS_* variables reach S3, its
    --dask-address is the default Dask cluster.
    """
    if list_only:
        for name in deployment_names():
            click.echo(name)
        return
    from prefect import serve

    from flows.api import shared_api
    from flows.deployments import build_deployments
    from ial.errors import UserError

    try:  # the nightly's config is read here: a bad one is said now, not at 03:00
        deployments = build_deployments(
            only=only, cron=cron, timezone=timezone, root=root,
            dask_address=dask_address, retrain_config=retrain_config,
        )
    except UserError:
        raise
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--only/--cron/--timezone") from None
    # PREFECT_API_URL checked, or a temporary server started outside the terminal's process
    # group: a Ctrl-C then stops the runner, which pauses its deployments on a live server
    with shared_api():
        serve(*deployments, limit=limit)
