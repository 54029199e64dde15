"""Benchmark: ingest of N clips over loopback vs a bare loop of ffmpeg section cuts.

Both sides cut the same 10 s sections of the same generated mp4 files into the same clip format
(8 fps, short side 224 px, mono AAC 22050 Hz):

- **bare loop**: one ``ffmpeg -ss START -t 10 -i FILE <clip format> OUT`` per clip, one after
  another, on local files (no download, no validation, no index);
- **ingest**: ``preprocessing.ingest.ingest`` with the default config (concurrency, batch size)
  fetching each section with yt-dlp from the Range-capable loopback server, validating it, writing
  it atomically, the clip index and the stats.

Prints clips/s of both and their ratio; target >= 0.5 on 2 cores. Last line::

    RESULT ingest_vs_bare_ratio=<x> target>=0.5

Usage: ``python benchmarks/ingest.py [--quick] [--clips N] [--work DIR]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ial.demo.corpus import generate_corpus  # noqa: E402
from ial.demo.video_server import VideoServer  # noqa: E402
from ial.media import ffmpeg_binary  # noqa: E402
from preprocessing.ingest.config import IngestConfig
from preprocessing.ingest.run import ingest  # noqa: E402
from preprocessing.ingest.slicing import clip_encode_args  # noqa: E402


def bare_loop(entries, out_dir: str, cfg: IngestConfig) -> float:
    """Seconds for a sequential loop of ffmpeg section cuts into the clip format."""
    args = clip_encode_args(cfg.fps, cfg.min_height, cfg.audio_rate, cfg.video_preset,
                            cfg.video_crf)
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    for e in entries:
        subprocess.run([ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                        "-ss", str(e.start_seconds), "-t", str(cfg.clip_seconds), "-i", e.path,
                        *args, os.path.join(out_dir, f"{e.video_id}.mp4")], check=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="12 clips (under a minute on 2 cores)")
    p.add_argument("--clips", type=int, default=None, help="number of clips (default 40)")
    p.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    a = p.parse_args(argv)
    n = a.clips or (12 if a.quick else 40)
    work = Path(a.work or tempfile.mkdtemp(prefix="ial-bench-ingest-"))
    per_class = max(1, (n + 3) // 4)
    t0 = time.perf_counter()
    corpus = generate_corpus(str(work / "corpus"), videos_per_class=per_class, seconds=13.0)
    entries = corpus.entries[:n]
    manifest = work / "bench.csv"
    manifest.write_text("".join(f"{e.video_id},{e.start_seconds:g},{e.label},{e.split}\n"
                                for e in entries))
    print(f"corpus: {len(entries)} videos in {time.perf_counter() - t0:.1f} s ({work})")

    defaults = IngestConfig()
    bare_s = bare_loop(entries, str(work / "bare"), defaults)
    with VideoServer(corpus.out_dir) as server:
        cfg = IngestConfig(manifest=str(manifest), dataset="bench", root=str(work / "root"),
                           url_template=server.url_template)
        t1 = time.perf_counter()
        summary = ingest(cfg, progress=False)
        ingest_s = time.perf_counter() - t1
    ok = summary["by_status"].get("ok", 0)
    if ok != len(entries):
        print(f"ingest did not finish every clip: {summary['by_status']} {summary['by_reason']}")
    bare_rate = len(entries) / bare_s
    ingest_rate = ok / ingest_s
    ratio = ingest_rate / bare_rate
    print(f"bare ffmpeg loop : {len(entries)} clips in {bare_s:6.2f} s = {bare_rate:5.2f} clips/s")
    print(f"ingest (yt-dlp)  : {ok} clips in {ingest_s:6.2f} s = {ingest_rate:5.2f} clips/s "
          f"(concurrency {cfg.concurrency}, batch {cfg.batch_size}, {os.cpu_count()} cores)")
    print(f"ratio ingest/bare: {ratio:.2f}")
    print(f"RESULT ingest_vs_bare_ratio={ratio:.2f} target>=0.5")
    return ratio


if __name__ == "__main__":
    main()
