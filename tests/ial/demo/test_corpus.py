import csv
import subprocess

import numpy as np
import pytest

from ial.demo.corpus import (CLASSES, make_video, render_frames, synthesize_audio, truncate_file,
                             write_vggsound_csv)
from ial.media import ffmpeg_binary, probe_media


def _codecs(path):
    text = subprocess.run([ffmpeg_binary(), "-hide_banner", "-i", path],
                          capture_output=True, text=True).stderr
    return [line for line in text.splitlines() if "Stream #" in line]


def test_corpus_files_are_h264_aac_and_csv_parses(demo_corpus):
    assert len(demo_corpus.entries) == 8
    assert sorted({e.label for e in demo_corpus.entries}) == sorted(CLASSES)
    for e in demo_corpus.entries[:3]:
        info = probe_media(e.path)
        assert info["has_audio"] and info["has_video"]
        assert abs(info["duration"] - 13.0) < 0.2
        assert (info["width"], info["height"]) == (320, 240)
        streams = _codecs(e.path)
        assert any("Video: h264" in s for s in streams)
        assert any("Audio: aac" in s for s in streams)
    with open(demo_corpus.manifest, newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 8
    for (vid, start, label, split), e in zip(rows, demo_corpus.entries):
        assert vid == e.video_id and len(vid) == 11
        assert float(start) == e.start_seconds and 1.0 <= float(start) <= 2.0
        assert label == e.label and split in ("train", "val", "test")


def test_vggsound_csv_quotes_labels_with_commas(tmp_path):
    path = write_vggsound_csv(tmp_path / "m.csv", [("abcdefghijk", 3, "dog, barking", "train")])
    text = open(path).read()
    assert text == 'abcdefghijk,3,"dog, barking",train\n'


def _dominant_hz(x, sr):
    n = 2048
    peaks = []
    for i in range(0, len(x) - n, n):
        frame = x[i:i + n] * np.hanning(n)
        power = np.abs(np.fft.rfft(frame)) ** 2
        if power.sum() > 1e-6:
            peaks.append(np.argmax(power) * sr / n)
    return float(np.median(peaks))


def _flatness(x):
    p = np.abs(np.fft.rfft(x)) ** 2 + 1e-12
    return float(np.exp(np.mean(np.log(p))) / np.mean(p))


def test_class_audio_differs_in_spectrum():
    sr = 11025
    dom = {c: np.mean([_dominant_hz(synthesize_audio(c, 4.0, sr, s), sr) for s in range(3)])
           for c in ("bass", "violin", "flute")}
    assert 60 < dom["bass"] < 220
    assert 380 < dom["violin"] < 950
    assert 750 < dom["flute"] < 1800
    assert dom["bass"] < dom["violin"] < dom["flute"]
    flat = {c: _flatness(synthesize_audio(c, 4.0, sr, 1)) for c in CLASSES}
    assert flat["drum"] > 10 * max(flat[c] for c in ("violin", "flute", "bass"))
    # deterministic in the seed, different across seeds
    a, b = synthesize_audio("violin", 1.0, sr, 5), synthesize_audio("violin", 1.0, sr, 5)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, synthesize_audio("violin", 1.0, sr, 6))
    with pytest.raises(KeyError, match="unknown demo class"):
        synthesize_audio("tuba", 1.0)


def test_frames_show_the_class_colour():
    frames = render_frames("violin", 1.0, fps=4, size=(64, 48), seed=0)
    assert frames.shape == (4, 48, 64, 3) and frames.dtype == np.uint8
    red = (frames[..., 0] > 200) & (frames[..., 1] < 60)
    assert red.sum(axis=(1, 2)).min() > 20


def test_helpers_make_videos_without_audio_and_truncated(tmp_path):
    frames = render_frames("bass", 3.0, fps=8, size=(64, 48), seed=1)
    silent_video = make_video(tmp_path / "noaudio.mp4", frames, fps=8, audio=None)
    info = probe_media(silent_video)
    assert info["has_video"] and not info["has_audio"]
    full = make_video(tmp_path / "cut.mp4", frames, fps=8,
                      audio=synthesize_audio("bass", 3.0, 22050, 0), sample_rate=22050)
    truncate_file(full, 0.5)
    proc = subprocess.run([ffmpeg_binary(), "-v", "error", "-i", full, "-f", "null", "-"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 or proc.stderr.strip()
