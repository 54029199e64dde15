"""End-to-end ingest over the loopback server: every outcome named, resume, kill, S3."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ial.demo.corpus import make_class_video, truncate_file
from ial.demo.video_server import VideoServer
from ial.media import probe_media
from ial.parquet_reading import read_parquet
from ial.storage import Storage, filesystem, read_bytes, sha256
from preprocessing.clip_index import read_clip_index
from preprocessing.ingest.batch import plan_batches, reason_code
from preprocessing.ingest.config import IngestConfig, redacted_config
from preprocessing.ingest.manifests import ManifestError, read_manifest
from preprocessing.ingest.run import NothingIngested, ingest, ingest_lock
from preprocessing.ingest.slicing import measure_clip
from tests.conftest import REPO, free_port


@pytest.fixture(scope="module")
def site(demo_corpus, tmp_path_factory):
    """A served folder: 7 demo videos + one without audio + one truncated."""
    d = tmp_path_factory.mktemp("site")
    (d / "videos").mkdir()
    for e in demo_corpus.entries[:7]:
        shutil.copy(e.path, d / "videos" / f"{e.video_id}.mp4")
    make_class_video(d / "videos" / "noAudio0001.mp4", "violin", 13.0, seed=5, with_audio=False)
    truncate_file(make_class_video(d / "videos" / "truncated01.mp4", "flute", 13.0, seed=6), 0.5)
    return d, [e.video_id for e in demo_corpus.entries[:7]]


def _rows(root, dataset):
    return {r["clip_id"]: r for r in read_clip_index(Storage(root), dataset).to_pylist()}


def _cfg(root, manifest, url_template, **kw):
    base = dict(manifest=str(manifest), dataset="t", root=str(root), url_template=url_template,
                clip_seconds=4.0, batch_size=4, concurrency=2, retries=1, backoff=0.05)
    base.update(kw)
    return IngestConfig(**base)


def test_every_outcome_is_named_and_reruns_resume(site, tmp_path):
    d, ids = site
    g = ids
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join([
        f"{g[0]},1,violin,train",          # ok
        f"{g[1]},2,violin,train",          # 429 (Retry-After 1) then ok
        f"{g[2]},1,flute,train",           # 500 then ok
        "missing0001,1,bass,train",        # 404
        f"{g[3]},1,flute,val",             # bot check
        f"{g[4]},1,bass,test",             # 403
        "noAudio0001,1,violin,train",      # no audio stream
        "truncated01,5,flute,train",       # truncated mp4 (data ends near 6.5 s)
        f"{g[5]},11,bass,train",           # section past the end (11 + 4 > 13)
        "badrow,xx,drum,train",            # malformed (line 10)
        f"{g[0]},1,violin,train",          # duplicate clip id
        f"{g[6]},1,drum,train",            # 500 twice: failed after 1 retry
    ]) + "\n")
    root = tmp_path / "root"
    with VideoServer(d) as srv:
        template = srv.url_template.replace("http://", "http://user:SECRETPW@")
        cfg = _cfg(root, manifest, template,
                   ytdlp_options={"http_headers": {"X-Api-Key": "SECRET-HEADER"}})
        with pytest.raises(ManifestError, match=r"m.csv:10: start_seconds"):
            ingest(cfg, progress=False)
        cfg.skip_malformed = True
        srv.script(g[1], [429, 200], retry_after=1)
        srv.script(g[2], [500, 200])
        srv.script(g[3], ["bot", "bot"])
        srv.script(g[4], [403])
        srv.script(g[6], [500, 500])
        summary = ingest(cfg, progress=False)

        rows = _rows(root, "t")
        got = {cid: (r["status"], reason_code(r["reason"]), r["attempts"])
               for cid, r in rows.items()}
        assert got == {
            f"{g[0]}_1000": ("ok", "", 1),
            f"{g[1]}_2000": ("ok", "", 2),
            f"{g[2]}_1000": ("ok", "", 2),
            "missing0001_1000": ("unavailable", "http_404", 1),
            f"{g[3]}_1000": ("unavailable", "bot_check", 1),
            f"{g[4]}_1000": ("unavailable", "http_403", 1),
            "noAudio0001_1000": ("invalid", "no_audio_stream", 1),
            "truncated01_5000": ("invalid", "truncated_source", 1),
            f"{g[5]}_11000": ("invalid", "section_past_end", 1),
            f"{g[6]}_1000": ("failed", "http_500", 2),
        }
        assert summary["duplicates"] == 1 and summary["entries"] == 11
        assert [s["line"] for s in summary["skipped_malformed"]] == [10]
        assert summary["by_status"] == {"ok": 3, "unavailable": 3, "invalid": 3, "failed": 1}
        assert summary["ok"] == 3 and summary["new"] == 10 and summary["batches"] == 3

        for r in rows.values():
            if r["status"] != "ok":
                assert r["path"] is None and r["reason"]
                continue
            assert r["path"] == str(root / "clips" / "t" / f"{r['clip_id']}.mp4")
            info = probe_media(r["path"])
            assert (info["fps"], info["height"], info["audio_rate"]) == (8.0, 224, 22050)
            assert r["duration"] == 4.0 and r["silent"] is False
            assert r["sha256"] == sha256(r["path"])
            assert (measure_clip(r["path"]).frames, measure_clip(r["path"]).samples) == (32, 88200)
        stats = sorted((root / "clips" / "t" / "stats").glob("m-0000*.json"))
        assert [p.name for p in stats] == ["m-00000.json", "m-00001.json", "m-00002.json"]
        by_reason = {}
        for p in stats:
            for k, v in json.loads(p.read_text())["by_reason"].items():
                by_reason[k] = by_reason.get(k, 0) + v
        assert by_reason == {"unavailable:http_404": 1, "unavailable:bot_check": 1,
                             "unavailable:http_403": 1, "invalid:no_audio_stream": 1,
                             "invalid:truncated_source": 1, "invalid:section_past_end": 1,
                             "failed:http_500": 1}
        # no secret anywhere under the root (stats, saved config, index)
        for dirpath, _, files in os.walk(root):
            for f in files:
                data = open(os.path.join(dirpath, f), "rb").read()
                assert b"SECRET" not in data, f
        saved = (root / "clips" / "t" / "ingest_config.yaml").read_text()
        assert "***" in saved and "X-Api-Key" in saved

        # re-run: nothing is downloaded again, no row duplicated
        n_requests = len(srv.requests)
        again = ingest(cfg, progress=False)
        assert again["new"] == 0 and again["skipped"] == 10 and len(srv.requests) == n_requests
        assert _rows(root, "t") == rows
        assert len(list((root / "clips" / "t" / "index").glob("*.parquet"))) == 3

        # --retry-failed: only the failed clip is tried again
        cfg.retry_failed = True
        third = ingest(cfg, progress=False)
        assert third["new"] == 1 and third["ok"] == 4 and third["failed"] == 0
        after = _rows(root, "t")
        assert after[f"{g[6]}_1000"]["status"] == "ok" and after[f"{g[6]}_1000"]["attempts"] == 3
        assert all(after[c] == rows[c] for c in rows if c != f"{g[6]}_1000")


def test_connection_refused_is_failed_after_retries(site, tmp_path):
    d, ids = site
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"{ids[0]},1,violin,train\n")
    cfg = _cfg(tmp_path / "root", manifest, f"http://127.0.0.1:{free_port()}/v/{{video_id}}.mp4",
               retries=2, backoff=0.01)
    with pytest.raises(NothingIngested, match=r"none of the 1 clips .*\(failed:connection_error 1\)"
                       ) as info:  # every clip failed: an error with the counts, not exit 0
        ingest(cfg, progress=False)
    (row,) = _rows(cfg.root, "t").values()
    assert (row["status"], reason_code(row["reason"]), row["attempts"]) == \
        ("failed", "connection_error", 3)
    assert info.value.summary["by_reason"] == {"failed:connection_error": 1}


def test_kill_and_resume_leaves_no_partial_clip_and_no_duplicate(site, demo_corpus, tmp_path):
    d, ids = site
    manifest = tmp_path / "kill.csv"
    manifest.write_text("".join(f"{e.video_id},{e.start_seconds:g},{e.label},{e.split}\n"
                                for e in demo_corpus.entries[:6]))
    root = tmp_path / "root"
    clips = root / "clips" / "t"
    with VideoServer(d) as srv:
        cfg = _cfg(root, manifest, srv.url_template, batch_size=2, concurrency=1)
        code = ("import sys; from preprocessing.ingest import IngestConfig, ingest; "
                f"ingest(IngestConfig(**{cfg.__dict__!r}), progress=False)")
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if clips.exists() and any(p.suffix == ".mp4" for p in clips.iterdir()):
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        visible = [p for p in clips.iterdir() if p.is_file() and not p.name.startswith(".")]
        # clips, the config, and the killed run's ingest.lock (taken over by the resume)
        assert visible and all(p.suffix in (".mp4", ".yaml", ".lock") for p in visible)
        for p in visible:
            if p.suffix == ".mp4":  # every visible clip is whole
                m = measure_clip(str(p))
                assert (m.frames, m.samples) == (32, 88200), p.name
        n_before = len(_rows(root, "t"))
        assert n_before < 6
        stale = clips / ".old_1000.mp4.tmp-deadbeef"  # what a SIGKILL mid-write leaves
        stale.write_bytes(b"half")
        os.utime(stale, (time.time() - 7200, time.time() - 7200))
        young = clips / ".new_1000.mp4.tmp-cafecafe"  # may be another writer's: kept
        young.write_bytes(b"half")

        import tempfile

        killed_temps = list(Path(tempfile.gettempdir()).glob(f"ial-ingest-{proc.pid}-*"))
        summary = ingest(cfg, progress=False)
    rows = _rows(root, "t")
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows.values())
    # adopted clips had their silence check run like new ones (was None)
    assert all(r["silent"] is False for r in rows.values())
    assert not stale.exists() and young.exists() and not (clips / "ingest.lock").exists()
    assert not [p for p in killed_temps if p.exists()]  # the killed run's clip folders are gone
    assert summary["skipped"] >= 1  # clips of the killed run were kept (index or adopted)
    mp4s = sorted(p.name for p in clips.iterdir()
                  if p.suffix == ".mp4" and not p.name.startswith("."))
    assert mp4s == sorted(f"{cid}.mp4" for cid in rows)
    parts = list((clips / "index").glob("*.parquet"))
    all_ids = [cid for p in parts for cid in read_parquet(str(p))["clip_id"].to_pylist()]
    assert len(all_ids) == len(set(all_ids)) == 6


def test_a_second_ingest_of_a_dataset_is_one_line_and_downloads_nothing(site, tmp_path):
    from click.testing import CliRunner

    from ial.cli import main

    d, ids = site
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"{ids[0]},1,violin,train\n")
    with VideoServer(d) as srv:
        cfg = _cfg(tmp_path / "root", manifest, srv.url_template)
        args = ["ingest", "--manifest", str(manifest), "--root", cfg.root, "--dataset", "t",
                "--url-template", srv.url_template]
        with ingest_lock(cfg.root, "t"):  # an ingest of dataset "t" that is running
            # in the run itself, and (with Prefect) before any flow starts
            for result in (CliRunner().invoke(main, [*args, "--no-prefect"]),
                           CliRunner().invoke(main, args)):
                assert result.exit_code == 1 and "Traceback" not in result.output, result.output
                assert result.output.strip().splitlines() == [result.output.strip()]
                assert result.output.startswith("Error: dataset 't' is being ingested already "
                                                "(pid ")
            assert srv.requests == []
        assert ingest(cfg, progress=False)["ok"] == 1  # once it has ended
    assert not (tmp_path / "root" / "clips" / "t" / "ingest.lock").exists()


def test_s3_root_against_moto(site, s3_root, tmp_path):
    d, ids = site
    manifest = tmp_path / "s3.csv"
    manifest.write_text(f"{ids[0]},1,violin,train\nmissing0002,1,bass,train\n"
                        "noAudio0001,1,violin,train\n")
    with VideoServer(d) as srv:
        cfg = _cfg(s3_root, manifest, srv.url_template, dataset="s3set")
        summary = ingest(cfg, progress=False)
        assert summary["by_status"] == {"ok": 1, "unavailable": 1, "invalid": 1}
        rows = _rows(s3_root, "s3set")
        ok = rows[f"{ids[0]}_1000"]
        assert ok["path"] == f"{s3_root}/clips/s3set/{ids[0]}_1000.mp4"
        import hashlib

        assert hashlib.sha256(read_bytes(ok["path"])).hexdigest() == ok["sha256"]
        assert reason_code(rows["missing0002_1000"]["reason"]) == "http_404"
        assert reason_code(rows["noAudio0001_1000"]["reason"]) == "no_audio_stream"
        stats = json.loads(read_bytes(f"{s3_root}/clips/s3set/stats/s3-00000.json"))
        assert stats["by_status"] == summary["by_status"] and stats["bytes"] > 0
        fs, path = filesystem(f"{s3_root}/clips/s3set")
        assert not [p for p in fs.find(path) if "tmp" in p.rsplit("/", 1)[-1]]
        again = ingest(cfg, progress=False)
        assert again["new"] == 0 and _rows(s3_root, "s3set") == rows


def test_plan_batches_and_config_redaction(tmp_path):
    manifest = tmp_path / "p.csv"
    manifest.write_text("".join(f"vid{i:08d},{i % 3},x,train\n" for i in range(10)) +
                        "vid00000000,0,x,train\n")
    entries = read_manifest(str(manifest), "vggsound")
    batches, dup = plan_batches(list(entries), 4, "p")
    assert dup == 1 and [b.batch_id for b in batches] == ["p-00000", "p-00001", "p-00002"]
    assert [len(b.entries) for b in batches] == [4, 4, 2]
    assert plan_batches(list(entries), 4, "p")[0] == batches  # fixed before any download
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n")
    cfg = IngestConfig(manifest="s3://b/m.csv", ytdlp_options={
        "proxy": "http://bob:pw@proxy:3128", "cookiefile": str(cookies),
        "password": "pw2", "http_headers": {"Authorization": "Bearer tok"}, "sleep_interval": 2})
    red = redacted_config(cfg).ytdlp_options
    assert red == {"proxy": "http://***@proxy:3128", "cookiefile": str(cookies),
                   "password": "***", "http_headers": {"Authorization": "***"},
                   "sleep_interval": 2}
    from ial.config import ConfigError

    with pytest.raises(ConfigError, match="audio_rate"):
        from ial.config import from_dict

        from_dict(IngestConfig, {"audio_rate": 8000})


def test_ingest_configs_load():
    from ial.config import load_config

    for name in ("vggsound", "audioset", "music", "demo"):
        cfg = load_config(IngestConfig, REPO / "configs" / "ingest" / f"{name}.yaml")
        assert cfg.manifest_format in ("vggsound", "audioset", "music")
        assert cfg.audio_rate >= 11025 and cfg.clip_seconds == 10.0


def test_batches_as_tasks_on_a_dask_client(site, tmp_path):
    from distributed import Client, LocalCluster

    d, ids = site
    manifest = tmp_path / "dask.csv"
    manifest.write_text("".join(f"{v},1,x,train\n" for v in ids[:3]) + "gone0000001,1,x,train\n")
    with VideoServer(d) as srv, \
            LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                         dashboard_address=None) as cluster, Client(cluster) as client:
        cfg = _cfg(tmp_path / "root", manifest, srv.url_template, batch_size=2,
                   clip_seconds=2.0, rate_limit_per_minute=600)
        summary = ingest(cfg, progress=False, client=client)
    assert summary["by_status"] == {"ok": 3, "unavailable": 1} and summary["batches"] == 2
    assert len(_rows(cfg.root, "t")) == 4


def test_same_clips_under_another_manifest_name_keep_one_row_and_relabel(site, tmp_path):

    d, ids = site
    first = tmp_path / "vggsound_train.csv"
    first.write_text(f"{ids[0]},1,violin,train\n{ids[1]},1,flute,train\n")
    copy = tmp_path / "copy_of_manifest.csv"  # the same clips, one label corrected
    copy.write_text(f"{ids[0]},1,violin,train\n{ids[1]},1,piccolo,train\n")
    root = tmp_path / "root"
    with VideoServer(d) as srv:
        ingest(_cfg(root, first, srv.url_template), progress=False)
        again = ingest(_cfg(root, copy, srv.url_template), progress=False)
    parts = sorted((root / "clips" / "t" / "index").glob("*.parquet"))
    raw = [r for p in parts for r in read_parquet(str(p)).to_pylist()]
    assert len(raw) == 2 and {r["batch"] for r in raw} == {"vggsound_train-00000"}  # one row each
    assert {r["clip_id"]: r["label"] for r in raw}[f"{ids[1]}_1000"] == "piccolo"  # applied
    assert (again["indexed_by_other_manifests"], again["relabeled"], again["ok"]) == (2, 1, 2)
    assert again["new"] == 0


def test_an_empty_manifest_is_an_error(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("\n")
    with pytest.raises(ManifestError, match="empty.csv: nothing to ingest: it has no entries"):
        ingest(_cfg(tmp_path / "root", empty, "http://127.0.0.1:9/{video_id}"), progress=False)
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n")
    cfg = _cfg(tmp_path / "root", bad, "http://127.0.0.1:9/{video_id}", skip_malformed=True)
    with pytest.raises(ManifestError, match="all 1 rows are malformed"):
        ingest(cfg, progress=False)
