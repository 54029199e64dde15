"""One ffmpeg process decodes a clip's audio and frames: same bytes as decoding them apart."""

from __future__ import annotations

import numpy as np
import pytest

from ial.media import run_ffmpeg
from preprocessing.featurize.clip_decode import decode_media, fit_length


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("decode") / "clip.mp4")
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "sine=frequency=440:duration=4:sample_rate=22050",
                "-f", "lavfi", "-i", "testsrc=size=160x120:rate=8:duration=4",
                "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", path])
    return path


def test_audio_and_frames_match_separate_decodes(clip):
    audio, pad, frames = decode_media(clip, [0.5, 1.0, 3.0], 32, length=11025 * 5)
    assert frames.shape == (3, 32, 32, 3) and frames.dtype == np.uint8
    assert audio.shape == (11025 * 5,) and audio.dtype == np.float32 and 0 < pad < 11025 * 2
    pcm = np.frombuffer(run_ffmpeg(["-i", clip, "-vn", "-ac", "1", "-ar", "11025", "-f", "s16le",
                                    "pipe:1"]).stdout, dtype="<i2")
    np.testing.assert_array_equal(audio[:len(pcm)], pcm.astype(np.float32) / 32768.0)
    assert not np.array_equal(frames[0], frames[2])  # testsrc moves over time
    one = decode_media(clip, [3.0], 32, length=100)[2]
    np.testing.assert_array_equal(one[0], frames[2])
    assert np.abs(audio[:11025]).max() > 0.1


def test_clear_errors(clip, tmp_path):
    with pytest.raises(RuntimeError, match=r"expected 2 frames .* decoded 1"):
        decode_media(clip, [1.0, 9.0], 32)  # the clip is 4 s long
    with pytest.raises(ValueError, match="ascending"):
        decode_media(clip, [2.0, 1.0], 32)
    video_only, audio_only = str(tmp_path / "video_only.mp4"), str(tmp_path / "audio_only.mp4")
    run_ffmpeg(["-y", "-i", clip, "-an", "-c:v", "copy", video_only])
    run_ffmpeg(["-y", "-i", clip, "-vn", "-c:a", "copy", audio_only])
    with pytest.raises(RuntimeError, match="no audio stream"):
        decode_media(video_only, [1.0], 32)
    with pytest.raises(RuntimeError, match="no video stream"):
        decode_media(audio_only, [1.0], 32)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(RuntimeError, match="ffmpeg failed"):
        decode_media(str(broken), [1.0], 32)


def test_fit_length():
    wave = np.ones(5, np.float32)
    padded, pad = fit_length(wave, 8)
    assert pad == 3 and padded.tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    trimmed, pad = fit_length(wave, 2)
    assert pad == -3 and trimmed.tolist() == [1, 1]
