"""``ial demo``: the whole pipeline on a generated corpus (see ial/demo/pipeline.py)."""

from __future__ import annotations

import click

from ial.cli.options import build_config, config_options, root_option


@click.command("demo")
@config_options(example="videos_per_class=12")
@root_option
def command(config_path, overrides, root):
    """Generate a small audio-visual corpus and run ingest → featurize → train → evaluate on it.

    \b
    Everything runs on embedded defaults: a local data directory (./data), Prefect's ephemeral
    API, a Dask LocalCluster and DeepSpeed in one CPU process. Takes ~3–6 minutes on 2 cores
    after the install (README).
    Ends with the SDR/SIR/SAR table (model, mixture, oracle masks) and the report directory.
    Re-running resumes: finished clips, shards and training are not redone.
    """
    from ial.demo.pipeline import DemoConfig, run_demo

    cfg = build_config(DemoConfig, config_path, overrides, root=root)
    run_demo(cfg)
