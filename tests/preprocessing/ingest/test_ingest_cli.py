"""``ial ingest``: help, a plain (--no-prefect) run, clean errors."""

import json

from click.testing import CliRunner

from ial.cli import main


def test_help_explains():
    out = CliRunner().invoke(main, ["ingest", "--help"]).output
    for word in ("--manifest", "--retry-failed", "--dask-address", "unavailable", "vggsound",
                 "audioset", "music", "generic", "clips/<dataset>/index"):
        assert word in out


def test_plain_run_and_errors(tmp_path, demo_corpus, video_server):
    e = demo_corpus.entries[0]
    manifest = tmp_path / "one.csv"
    manifest.write_text(f"{e.video_id},{e.start_seconds:g},{e.label},{e.split}\nbad,line\n")
    args = ["ingest", "--manifest", str(manifest), "--root", str(tmp_path / "root"),
            "--dataset", "cli", "--url-template", video_server.url_template, "--no-prefect",
            "--no-progress", "--set", "clip_seconds=2"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0 and f"{manifest}:2" in res.output
    res = CliRunner().invoke(main, args + ["--skip-malformed"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["ok"] == 1 and summary["skipped_malformed"][0]["line"] == 2
    res = CliRunner().invoke(main, args + ["--set", "audio_rate=8000"])
    assert res.exit_code != 0 and "audio_rate" in res.output
    res = CliRunner().invoke(main, ["ingest", "--no-prefect"])
    assert res.exit_code != 0 and "no manifest" in res.output
