"""Benchmark: the project's featurizer vs a Sound-of-Pixels-style baseline, same clips, one run.

Baseline (what SoP's preprocessing + data loader do, one clip at a time, one process with
torch's default threads): ffmpeg decodes the audio to mono 11025 Hz; a librosa-style STFT
(reflect pad, periodic Hann, ``np.fft.rfft`` over strided frames) and the log-frequency warp in
numpy; ffmpeg extracts the clip's frames at 8 fps to JPEG files (SoP's frame extraction), PIL
opens the K frames nearest the chosen times, resizes the short side and centre-crops; the same
ResNet-18 trunk (eager) gives the frame features.

Project: ``preprocessing.featurize.featurize`` on the LocalCluster ``ial featurize`` starts
(``dask_client``: 2 worker processes, 1 torch thread each, profiler off): audio and frames in
one ffmpeg pass, batched ``InferenceTrunk`` (BN folded, Winograd convs), decode overlapped with
compute, Parquet shards written as it goes.

Both sides are timed warm, i.e. in the steady state a 200k-clip run spends its time in: before
its clock the baseline process builds its trunk and featurizes one clip, and each project worker
builds its trunk and featurizes one batch (allocator pools, the Winograd workspaces and oneDNN's
kernels are set up by then: a cold worker spends its first ~3 batches on page faults). The
cluster start-up and the warm-up are printed separately.

Clips (``--sources``): by default the clips featurize reads in this pipeline, i.e. 10 s
480x360 25 fps sources cut by the project's own ingest (8 fps, short side 224 px, 22.05 kHz mono);
``--sources raw`` feeds both sides the 480x360 25 fps originals instead (video decoding then
costs both sides more: ~0.11 s per clip to reach the 7.5 s frame).

Both run on the same 2 cores (the process is pinned with sched_setaffinity) over the same N
clips; the speedup is the ratio of their clips/s. Peak RSS: the project's worker peak (from the
shard stats) at N and 2N clips, each worker writing one shard of N/2 then N clips, so memory that
grew with the clips a worker streams would show; the baseline's process peak at N. A worker's RSS
warms up over its first ~3 batches (allocator pools, ~30 clips at 224 px), then stays flat: use
N >= 64 to measure past that.

    python benchmarks/featurize.py --quick     # < 1 min: 4 / 8 clips, 64 px frames
    python benchmarks/featurize.py             # 64 / 128 clips, 224 px frames (the default config)
Last line: ``RESULT featurize_speedup=<x> target>=3``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ial.media import ffmpeg_binary, run_ffmpeg  # noqa: E402
from ial.signal import CLIP_SAMPLES, HOP, LINEAR_BINS, LOG_BINS, N_FFT, SAMPLE_RATE  # noqa: E402

# ------------------------------------------------------------------------------------- inputs

def make_sources(out_dir: Path, count: int = 4, kind: str = "ingest") -> list[str]:
    """A few distinct 10 s clips. ``raw``: like a VGGSound download, 480x360 H.264 at 25 fps
    with one keyframe, AAC 44.1 kHz stereo. ``ingest`` (default): those cut by the project's
    ingest (``preprocessing.ingest.slicing.slice_clip`` with the ingest defaults: 8 fps, short side
    224 px, AAC 22.05 kHz mono) — the clips featurize reads in this pipeline."""
    from preprocessing.ingest.config import IngestConfig
    from preprocessing.ingest.slicing import slice_clip

    ingest = IngestConfig()
    paths = []
    for i in range(count):
        path = out_dir / f"source{i}.mp4"
        run_ffmpeg(["-y", "-f", "lavfi", "-i", f"sine=frequency={220 * (i + 1)}:duration=10:"
                    "sample_rate=44100", "-f", "lavfi", "-i",
                    "testsrc2=size=480x360:rate=25:duration=10", "-ac", "2",
                    "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", "-shortest",
                    str(path)])
        if kind == "ingest":
            clip = out_dir / f"clip{i}.mp4"
            slice_clip(str(path), str(clip), 0.0, 10.0, fps=ingest.fps,
                       min_side=ingest.min_height, audio_rate=ingest.audio_rate)
            path = clip
        paths.append(str(path))
    return paths


def write_clip_root(root: Path, sources: list[str], n: int) -> None:
    from ial.storage import Storage
    from preprocessing.clip_index import write_clip_index_part

    clips = root / "clips" / "bench"
    clips.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = clips / f"clip{i:05d}_0.mp4"
        shutil.copy(sources[i % len(sources)], path)
        rows.append({"clip_id": f"clip{i:05d}_0", "video_id": f"clip{i:05d}", "dataset": "bench",
                     "label": f"class{i % 4}", "labels": [f"class{i % 4}"], "split": "train",
                     "url": "", "start": 0.0, "end": 10.0, "status": "ok", "reason": "",
                     "path": str(path), "duration": 10.0, "sha256": None, "silent": False,
                     "attempts": 1, "batch": "b0",
                     "updated_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)})
    write_clip_index_part(Storage(str(root)), "bench", "b0", rows)


# ----------------------------------------------------------------------------------- baseline

def np_stft_magnitude(wave: np.ndarray) -> np.ndarray:
    """librosa-style STFT magnitude. Shape: (L,) → (512, L // 256 + 1)."""
    padded = np.pad(wave, N_FFT // 2, mode="reflect")
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann, as librosa
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    return np.abs(np.fft.rfft(frames * window, axis=1)).T.astype(np.float32)


def np_log_warp(mag: np.ndarray) -> np.ndarray:
    """SoP warpgrid + bilinear sampling along frequency, in numpy. (512, T) → (256, T)."""
    i = np.arange(LOG_BINS)
    pos = (np.power(21.0, i / (LOG_BINS - 1)) - 1.0) / 20.0 * (LINEAR_BINS - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, LINEAR_BINS - 1)
    frac = (pos - lo)[:, None].astype(np.float32)
    return mag[lo] * (1.0 - frac) + mag[hi] * frac


def baseline_clip(path: str, times: list[float], size: int, trunk, work: str) -> dict:
    import torch
    from PIL import Image

    from ial.models.resnet18 import imagenet_normalize

    pcm = np.frombuffer(run_ffmpeg(["-i", path, "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE),
                                    "-f", "s16le", "pipe:1"]).stdout, dtype="<i2")
    wave = np.zeros(CLIP_SAMPLES, np.float32)
    wave[:min(len(pcm), CLIP_SAMPLES)] = pcm[:CLIP_SAMPLES] / 32768.0
    spec = np_log_warp(np_stft_magnitude(wave))
    frame_dir = tempfile.mkdtemp(dir=work)
    run_ffmpeg(["-i", path, "-vf", "fps=8", "-q:v", "3", f"{frame_dir}/%06d.jpg"])
    images = []
    for t in times:
        with Image.open(f"{frame_dir}/{int(round(t * 8)) + 1:06d}.jpg") as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))),
                           Image.BILINEAR)
            left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
            images.append(np.asarray(im.crop((left, top, left + size, top + size))))
    shutil.rmtree(frame_dir)
    with torch.inference_mode():
        feats = trunk(imagenet_normalize(np.stack(images))).numpy()
    return {"spec": spec, "frame_features": feats}


def baseline_main(paths_file: str, size: int, spec_out: str | None) -> None:
    """Child process: run the baseline over the clips, print one JSON line."""
    from ial.models.resnet18 import build_trunk

    paths = json.loads(Path(paths_file).read_text())
    trunk, _ = build_trunk(None)
    work = tempfile.mkdtemp(prefix="sop-frames-")
    baseline_clip(paths[0], [2.5, 5.0, 7.5], size, trunk, work)  # warm-up, untimed
    start = time.perf_counter()
    for i, path in enumerate(paths):
        out = baseline_clip(path, [2.5, 5.0, 7.5], size, trunk, work)
        if i == 0 and spec_out:
            np.save(spec_out, out["spec"])
    seconds = time.perf_counter() - start
    shutil.rmtree(work)
    print(json.dumps({"seconds": seconds, "clips": len(paths),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_baseline(paths: list[str], size: int, work: Path, spec_out: str | None = None) -> dict:
    paths_file = work / f"paths-{len(paths)}.json"
    paths_file.write_text(json.dumps(paths))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    cmd = [sys.executable, __file__, "--baseline-child", str(paths_file), "--frame-size", str(size)]
    if spec_out:
        cmd += ["--spec-out", spec_out]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ project

def warm_worker(cfg, paths: list[str]) -> None:
    """In a Dask worker: set up as a shard task does, then featurize one batch (not written)."""
    from preprocessing.featurize.features import compute_features, decode_clip, prepare_worker

    compute_features([decode_clip(p, cfg) for p in paths], prepare_worker(cfg)[0])


def run_project(root: Path, sources: list[str], n: int, size: int, workers: int) -> dict:
    from preprocessing.featurize.config import FeaturizeConfig
    from preprocessing.featurize.run import dask_client, featurize

    write_clip_root(root, sources, n)
    cfg = FeaturizeConfig(root=str(root), dataset="bench", frame_size=size, n_workers=workers,
                          clips_per_shard=math.ceil(n / workers), batch_clips=8,
                          row_group_clips=8, torch_threads=1)
    cfg.validate()
    t0 = time.perf_counter()
    with dask_client(cfg) as client:  # the LocalCluster ``ial featurize`` starts
        startup = time.perf_counter() - t0
        client.run(warm_worker, cfg, (sources * cfg.batch_clips)[:cfg.batch_clips])
        warmup = time.perf_counter() - t0 - startup
        start = time.perf_counter()
        summary = featurize(cfg, client=client, progress=False)
        seconds = time.perf_counter() - start
    assert summary["rows_written"] == n, summary
    return {"seconds": seconds, "clips": n, "startup_s": startup, "warmup_s": warmup,
            "peak_rss_mb": summary["worker_peak_rss_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run (< 1 min on 2 cores)")
    parser.add_argument("--n", type=int, default=None, help="N clips (RSS also at 2N)")
    parser.add_argument("--frame-size", type=int, default=None, help="frame px (default 224)")
    parser.add_argument("--cores", type=int, default=2, help="pin the run to this many cores")
    parser.add_argument("--sources", choices=("ingest", "raw"), default="ingest",
                        help="clips as the project's ingest writes them (8 fps, 224 px; the "
                             "default) or raw 480x360 25 fps downloads")
    parser.add_argument("--baseline-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spec-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child:
        baseline_main(args.baseline_child, args.frame_size, args.spec_out)
        return
    n = args.n or (4 if args.quick else 64)
    size = args.frame_size or (64 if args.quick else 224)
    cpus = sorted(os.sched_getaffinity(0))[:args.cores]
    os.sched_setaffinity(0, cpus)  # children (workers, baseline, ffmpeg) inherit it
    workers = len(cpus)
    print(f"featurize benchmark: N={n} {args.sources} clips (and 2N={2 * n}), {size} px frames, "
          f"cores {cpus}, ffmpeg {ffmpeg_binary()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="ial-bench-featurize-"))
    try:
        sources = make_sources(work, kind=args.sources)
        ours = {k: run_project(work / f"root{k}", sources, k, size, workers) for k in (n, 2 * n)}
        clip_paths = {k: [str(p) for p in
                          sorted((work / f"root{k}" / "clips" / "bench").glob("*.mp4"))]
                      for k in (n, 2 * n)}
        spec_file = str(work / "baseline_spec.npy")
        base = {n: run_baseline(clip_paths[n], size, work, spec_file)}
        # same computation: the baseline's numpy spectrogram vs the project's torch one
        from preprocessing.featurize.config import FeaturizeConfig
        from preprocessing.featurize.features import featurize_clip

        ref = featurize_clip(clip_paths[n][0], FeaturizeConfig(frame_size=size))["spec"]
        got = np.load(spec_file)
        spec_err = float(np.abs(ref - got).max() / np.abs(ref).max())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name, res in (("project", ours), ("baseline (SoP-style)", base)):
        for k, r in res.items():
            rows.append(f"{name:22s} {k:4d} clips  {r['seconds']:7.2f} s  "
                        f"{k / r['seconds']:6.2f} clips/s  peak RSS {r['peak_rss_mb']:7.1f} MB")
    print("\n".join(rows))
    print(f"project LocalCluster start-up / worker warm-up (not in the timing): "
          f"{ours[n]['startup_s']:.1f} s + {ours[n]['warmup_s']:.1f} s / "
          f"{ours[2 * n]['startup_s']:.1f} s + {ours[2 * n]['warmup_s']:.1f} s")
    print(f"spectrogram max relative difference baseline vs project: {spec_err:.2e}")
    speed_ours = n / ours[n]["seconds"]
    speed_base = n / base[n]["seconds"]
    rss_growth = ours[2 * n]["peak_rss_mb"] / ours[n]["peak_rss_mb"]
    print(f"clips/s on the same {n} clips: project {speed_ours:.2f}, baseline {speed_base:.2f}; "
          f"project worker peak RSS 2N/N = {rss_growth:.2f} (flat = 1.0)")
    print(f"RESULT featurize_speedup={speed_ours / speed_base:.2f} target>=3")


if __name__ == "__main__":
    main()
