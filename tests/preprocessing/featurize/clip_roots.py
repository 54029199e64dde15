"""A local or S3 storage root with an ingested toy dataset, for the featurize tests: tone
videos made with ffmpeg, their clip index, and a small FeaturizeConfig."""

from __future__ import annotations

import datetime as dt
import os
import shutil

import pytest

from ial.media import run_ffmpeg
from ial.storage import Storage, upload_file
from preprocessing.clip_index import write_clip_index_part
from preprocessing.featurize.config import FeaturizeConfig

FRAME_SIZE = 64  # small frames keep the CPU tests fast; 224 is the default


def make_video(path: str, tone_hz: float, seconds: float = 10.0) -> str:
    """An mp4 with a sine tone (22050 Hz AAC) and a 25 fps test pattern (H.264)."""
    run_ffmpeg(["-y", "-f", "lavfi", "-i", f"sine=frequency={tone_hz}:duration={seconds}:"
                "sample_rate=22050", "-f", "lavfi", "-i",
                f"testsrc=size=320x240:rate=25:duration={seconds}",
                "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", path])
    return path


@pytest.fixture(scope="session")
def source_videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    good = {hz: make_video(str(d / f"tone{hz}.mp4"), hz) for hz in (440, 880)}
    corrupt = str(d / "corrupt.mp4")
    with open(good[440], "rb") as f:
        data = f.read()
    with open(corrupt, "wb") as f:
        f.write(data[: len(data) // 20])  # truncated: the moov atom is gone
    return {"good": good, "corrupt": corrupt}


def index_row(clip_id: str, path: str, label: str, split: str, status: str = "ok") -> dict:
    return {"clip_id": clip_id, "video_id": clip_id.rsplit("_", 1)[0], "dataset": "toy",
            "label": label, "labels": [label], "split": split, "url": f"http://x/{clip_id}",
            "start": 0.0, "end": 10.0, "status": status,
            "reason": "" if status == "ok" else "gone", "path": path if status == "ok" else None,
            "duration": 10.0, "sha256": None, "silent": False, "attempts": 1, "batch": "b0",
            "updated_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)}


def make_clip_root(root: str, videos: dict, n_good: int, corrupt: bool = True) -> dict:
    """Copy clips under ``root``/clips/toy and write their clip index. Returns {clip_id: label}."""
    storage = Storage(root)
    rows, labels = [], {}
    for i in range(n_good):
        hz = 440 if i % 2 == 0 else 880
        clip_id = f"vid{i:03d}_{1000 * i}"
        url = storage.url("clips", "toy", f"{clip_id}.mp4")
        if storage.remote:
            upload_file(videos["good"][hz], url)
        else:
            os.makedirs(os.path.dirname(url), exist_ok=True)
            shutil.copy(videos["good"][hz], url)
        label = f"tone{hz}"
        rows.append(index_row(clip_id, url, label, "train" if i % 3 else "val"))
        labels[clip_id] = label
    if corrupt:
        url = storage.url("clips", "toy", "bad_0.mp4")
        if storage.remote:
            upload_file(videos["corrupt"], url)
        else:
            shutil.copy(videos["corrupt"], url)
        rows.append(index_row("bad_0", url, "tone440", "train"))
    rows.append(index_row("gone_0", "", "tone880", "train", status="unavailable"))
    write_clip_index_part(storage, "toy", "b0", rows)
    return labels


def small_config(root, **kw) -> FeaturizeConfig:
    values = dict(root=str(root), dataset="toy", clips_per_shard=3, row_group_clips=2,
                  batch_clips=2, frame_size=FRAME_SIZE, n_workers=2)
    values.update(kw)
    cfg = FeaturizeConfig(**values)
    cfg.validate()
    return cfg
