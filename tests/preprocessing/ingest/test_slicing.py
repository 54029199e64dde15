"""ffmpeg slicing: exact length, fps, size, rate; invalid inputs named; silence flagged."""

import numpy as np
import pytest

from ial.demo.corpus import (make_class_video, make_video, render_frames, synthesize_audio,
                             truncate_file)
from ial.media import probe_media
from preprocessing.ingest.slicing import (SliceInvalid, clip_encode_args, finalize_section,
                                          measure_clip, slice_clip)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("slicing")
    frames = render_frames("drum", 6.0, fps=10, size=(160, 120), seed=0)
    audio = synthesize_audio("drum", 6.0, 22050, seed=0)
    files = {
        "ok": make_class_video(d / "ok.mp4", "drum", 6.0, seed=0, fps=10, size=(160, 120)),
        "noaudio": make_video(d / "noaudio.mp4", frames, 10, None),
        "silent": make_video(d / "silent.mp4", frames, 10, np.zeros_like(audio), 22050),
        "tall": make_class_video(d / "tall.mp4", "flute", 3.0, seed=1, size=(120, 160)),
    }
    files["truncated"] = truncate_file(make_video(d / "truncated.mp4", frames, 10, audio, 22050),
                                       0.5)
    (d / "garbage.mp4").write_bytes(b"\x00" * 5000)
    files["garbage"] = str(d / "garbage.mp4")
    return files


def test_clip_is_exact(media, tmp_path):
    r = slice_clip(media["ok"], str(tmp_path / "c.mp4"), start=1.3, duration=4.0, fps=8,
                   min_side=224, audio_rate=11025)
    assert (r.frames, r.samples) == (32, 44100) and r.duration == 4.0 and not r.silent
    info = probe_media(r.path)
    got = (info["width"], info["height"], info["fps"], info["audio_rate"])
    assert got == (298, 224, 8.0, 11025)
    assert abs(info["duration"] - 4.0) < 0.05
    m = measure_clip(r.path)
    assert (m.frames, m.samples) == (32, 44100)
    # portrait input: the short side (width) becomes 224
    r2 = slice_clip(media["tall"], str(tmp_path / "t.mp4"), 0.5, 2.0, fps=8, min_side=224)
    assert (r2.width, r2.height) == (224, 298)


def test_audio_and_video_start_together(media, tmp_path):
    """The drum's triangle grows with each hit: the clip's frame sizes follow its audio."""
    import subprocess

    from ial.media import ffmpeg_binary

    r = slice_clip(media["ok"], str(tmp_path / "c.mp4"), start=1.0, duration=4.0, fps=10,
                   min_side=0, audio_rate=22050)
    raw = subprocess.run([ffmpeg_binary(), "-v", "error", "-i", r.path, "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, 120, 160, 3)
    yellow = ((frames[..., 0] > 200) & (frames[..., 1] > 180) & (frames[..., 2] < 90)).sum((1, 2))
    pcm = subprocess.run([ffmpeg_binary(), "-v", "error", "-i", r.path, "-f", "f32le", "-ac", "1",
                          "-ar", "22050", "-"], capture_output=True).stdout
    audio = np.frombuffer(pcm, np.float32)[: 4 * 22050]
    loud = np.sqrt((audio[: len(yellow) * 2205].reshape(len(yellow), 2205) ** 2).mean(1))
    lags = {lag: np.corrcoef(yellow[5 + lag:35 + lag], loud[5:35])[0, 1]
            for lag in (-2, -1, 0, 1, 2)}
    assert max(lags, key=lags.get) == 0 and lags[0] > 0.5


@pytest.mark.parametrize("name, start, reason", [
    ("noaudio", 1.0, "no_audio_stream"),
    ("truncated", 1.0, "truncated_source"),
    ("ok", 4.0, "section_past_end"),
    ("garbage", 0.0, "unreadable_source"),
])
def test_invalid_inputs_are_named(media, tmp_path, name, start, reason):
    with pytest.raises(SliceInvalid) as err:
        slice_clip(media[name], str(tmp_path / "c.mp4"), start=start, duration=4.0)
    assert err.value.reason == reason
    assert not (tmp_path / "c.mp4").exists() or reason == "truncated_source"


def test_silent_audio_is_flagged(media, tmp_path):
    r = slice_clip(media["silent"], str(tmp_path / "s.mp4"), 1.0, 3.0)
    assert r.silent and (r.max_volume_db is None or r.max_volume_db < -80)


def test_finalize_section_keeps_exact_sections_and_fixes_others(media, tmp_path):
    import subprocess

    from ial.media import ffmpeg_binary

    section = str(tmp_path / "section.mp4")
    args = clip_encode_args(fps=8, min_side=224, audio_rate=22050)
    subprocess.run([ffmpeg_binary(), "-v", "error", "-ss", "1", "-t", "3", "-i", media["ok"],
                    *args, section], check=True)
    r = finalize_section(section, str(tmp_path / "clip.mp4"), duration=3.0, fps=8)
    assert (r.frames, r.samples, r.height) == (24, 66150, 224)
    # a section at the wrong rate is re-sliced into the clip format
    other = str(tmp_path / "other.mp4")
    subprocess.run([ffmpeg_binary(), "-v", "error", "-ss", "1", "-t", "3", "-i", media["ok"],
                    other], check=True)
    r = finalize_section(other, str(tmp_path / "clip2.mp4"), duration=3.0, fps=8, audio_rate=16000)
    assert (r.frames, r.samples) == (24, 48000) and probe_media(r.path)["audio_rate"] == 16000
    with pytest.raises(ValueError, match="audio_rate"):
        slice_clip(media["ok"], str(tmp_path / "x.mp4"), audio_rate=8000)


def test_ffmpeg_failure_is_named_with_its_log(media):
    """A file ffmpeg cannot decode: SliceInvalid("unreadable_source") carrying ffmpeg's exit
    code and the end of its log, not a bare CalledProcessError."""
    with pytest.raises(SliceInvalid) as err:
        measure_clip(media["garbage"])
    assert err.value.reason == "unreadable_source"
    assert "ffmpeg failed (" in str(err.value) and "garbage.mp4" in str(err.value)
