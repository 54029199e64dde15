"""``ial ingest``: manifest → clips + clip index (the CLI of the ``ingest`` flow)."""

from __future__ import annotations

import json

import click

from ial.cli.options import build_config, config_options, root_option


@click.command("ingest", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--manifest", default=None, metavar="PATH|URL",
              help="Manifest file (local or s3://). Required unless the config names one.")
@click.option("--format", "manifest_format", default=None,
              type=click.Choice(["vggsound", "audioset", "music", "generic", "ave"]),
              help="Manifest format (default from config: vggsound).")
@click.option("--dataset", default=None,
              help="Dataset name: clips go to <root>/clips/<dataset>/ (default: the format).")
@root_option
@click.option("--url-template", default=None, metavar="URL",
              help="Where a video id is fetched from; must contain {video_id} "
                   "(default: https://www.youtube.com/watch?v={video_id}).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Clips per batch (one index part + one stats file each).")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Clips in flight per batch.")
@click.option("--rate-limit", "rate_limit_per_minute", type=click.FloatRange(min=0), default=None,
              help="Global download attempts per minute across all workers (0 = unlimited).")
@click.option("--cookies", default=None, metavar="FILE",
              help="Netscape cookie file for yt-dlp (must exist; each download reads a private "
                   "copy, so the file is never rewritten; its content is never logged or saved).")
@click.option("--proxy", default=None, metavar="URL",
              help="Proxy for yt-dlp (credentials are redacted from logs/stats/saved config; "
                   "with --prefect they are part of the flow run's parameters: prefer the "
                   "HTTPS_PROXY environment variable there).")
@click.option("--retry-failed", is_flag=True,
              help="Retry clips recorded as failed (429/5xx/connection/timeouts) by earlier runs.")
@click.option("--skip-malformed", is_flag=True,
              help="Skip malformed manifest rows (counted with their line numbers) instead of "
                   "stopping at the first one.")
@click.option("--dask-address", default=None, metavar="tcp://HOST:PORT",
              help="Running Dask scheduler (default: a LocalCluster with --prefect, in-process "
                   "otherwise).")
@click.option("--prefect/--no-prefect", default=True, show_default=True,
              help="Run as the Prefect flow `ingest` (batches as tasks on a Dask task runner) or "
                   "as a plain in-process run.")
@click.option("--no-progress", is_flag=True, help="No progress bar (plain run).")
@config_options(example="concurrency=4")
def command(manifest, manifest_format, dataset, root, url_template, batch_size, concurrency,
            rate_limit_per_minute, cookies, proxy, retry_failed, skip_malformed, dask_address,
            prefect, no_progress, config_path, overrides):
    """Download exactly the needed section of each manifest entry (yt-dlp) and cut it into a
    clip (ffmpeg): 10 s, 8 fps, short side 224 px, mono AAC at 22050 Hz by default.

    \b
    Writes under --root:
      clips/<dataset>/<clip_id>.mp4            one clip (clip_id = <video_id>_<start_ms>)
      clips/<dataset>/index/<batch>.parquet    clip index: one row per clip with its status
                                               (ok | unavailable | failed | invalid) and reason
      clips/<dataset>/stats/<batch>.json       counts by status and reason, bytes, clips/s
      clips/<dataset>/ingest_config.yaml       the config used (secrets redacted)
    Unavailable videos (404/403/410, private, removed, age/geo restricted, bot check) are
    recorded and never retried; throttling and server errors (429 with Retry-After, 5xx,
    connection errors, timeouts) are retried with exponential backoff, then recorded as failed.
    Re-running skips every clip already done; --retry-failed retries the failed ones. A run
    killed at any moment leaves no partial clip.

    \b
    Manifest formats:
      vggsound  CSV, no header: youtube_id,start_seconds,label,split
      audioset  segments CSV (# header lines; YTID, start, end, "mid1,mid2"); MIDs → names with
                --set manifest_options.labels_csv=class_labels_indices.csv
      music     JSON {"videos": {instrument: [youtube_id, ...]}} (solo and duet files)
      generic   CSV with header (or Parquet): url|path,start,end,labels,split
      ave       AVE annotations: Category&VideoID&Quality&StartTime&EndTime (split from the
                file name: trainSet/valSet/testSet.txt, or manifest_options.split)

    \b
    Examples:
      ial ingest --manifest vggsound.csv --root s3://bucket/ial --cookies cookies.txt
      ial ingest --config configs/ingest/audioset.yaml --manifest balanced_train_segments.csv
      ial ingest --manifest music_solo.json --format music --dataset music --retry-failed
      ial ingest --config configs/ingest/demo.yaml --manifest demo/vggsound.csv \\
                 --url-template 'http://127.0.0.1:8000/videos/{video_id}.mp4' --no-prefect
    """
    from ial.config import to_dict
    from preprocessing.ingest.config import IngestConfig, redacted_config
    from preprocessing.ingest.run import check_inputs, ingest_lock

    ytdlp = {}
    if cookies:
        ytdlp["cookiefile"] = cookies
    if proxy:
        ytdlp["proxy"] = proxy
    values = dict(manifest=manifest, manifest_format=manifest_format, dataset=dataset,
                  root=root, url_template=url_template, batch_size=batch_size,
                  concurrency=concurrency, rate_limit_per_minute=rate_limit_per_minute,
                  dask_address=dask_address, retry_failed=retry_failed or None,
                  skip_malformed=skip_malformed or None, ytdlp_options=ytdlp or None)
    flags = {"manifest_format": "--format", "rate_limit_per_minute": "--rate-limit",
             "ytdlp_options": "--cookies/--proxy"}
    cfg = build_config(IngestConfig, config_path, overrides, flags, redacted_config, **values)
    if not cfg.manifest:
        raise click.UsageError("no manifest: give --manifest or a config with `manifest:`")
    if prefect:
        check_inputs(cfg)  # a bad manifest or root: one line, before Prefect starts its server
        # so is an ingest of the dataset that is running
        ingest_lock(cfg.root, cfg.dataset_name).check()
        from flows.api import check_api
        from flows.ingest import ingest_flow

        check_api()

        given = {k: v for k, v in to_dict(cfg).items()
                 if k not in ("manifest", "manifest_format", "root", "dataset",
                              "dask_address", "retry_failed")}
        summary = ingest_flow(manifest=cfg.manifest, manifest_format=cfg.manifest_format,
                              root=cfg.root, dataset=cfg.dataset, config=None,
                              overrides=[f"{k}={json.dumps(v)}" for k, v in given.items()],
                              dask_address=cfg.dask_address, retry_failed=cfg.retry_failed)
    else:
        from preprocessing.ingest.run import ingest

        summary = ingest(cfg, progress=not no_progress)
    click.echo(json.dumps(summary, indent=1))
