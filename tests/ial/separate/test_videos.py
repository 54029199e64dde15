"""``ial separate`` on generated single-class videos (real ffmpeg decode, real ResNet-18 trunk)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from ial.signal import CLIP_SAMPLES, SAMPLE_RATE

# What the test featurizer does: 2 frames of 112 px (features (2, 512, 7, 7)), random trunk.
FEATURIZE = {"num_frames": 2, "frame_times": [1.0, 3.0], "frame_size": 112}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from ial.demo.corpus import make_class_video

    out = tmp_path_factory.mktemp("videos")
    return [make_class_video(str(out / f"{label}.mp4"), label, seconds=4.0, seed=i)
            for i, label in enumerate(("violin", "bass"))]


@pytest.fixture(scope="module")
def duet_video(tmp_path_factory):
    """One generated video with two sources: violin and bass side by side, their sounds summed."""
    from ial.demo.corpus import make_video, render_frames, synthesize_audio

    seconds, sr = 4.0, 22050
    frames = np.concatenate([render_frames("violin", seconds, size=(160, 240), seed=1),
                             render_frames("bass", seconds, size=(160, 240), seed=2)], axis=2)
    audio = synthesize_audio("violin", seconds, sr, seed=1) + synthesize_audio("bass", seconds, sr,
                                                                               seed=2)
    path = str(tmp_path_factory.mktemp("duet") / "duet.mp4")
    return make_video(path, frames, audio=0.7 * audio, sample_rate=sr)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from ial.models import ModelConfig, build_model
    from ial.models.export import export_model

    torch.manual_seed(0)
    cfg = ModelConfig(name="ial_cms", visual_channels=512, embed_dim=16,
                      audio_channels=[4, 8, 8, 16], common_hidden=16)
    url = str(tmp_path_factory.mktemp("ckpt") / "model.pt")
    return export_model(url, build_model(cfg), cfg,
                        lineage={"run": "sep", "featurize_config": FEATURIZE}, metrics={})


def test_separate_two_videos_cli(videos, checkpoint, tmp_path):
    from ial.cli import main

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["separate", *videos, "--checkpoint", checkpoint,
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == ["bass.wav", "mixture.wav", "separation.json",
                                       "spectrogram.png", "violin.wav"]
    info = json.loads((out / "separation.json").read_text())
    assert info["mode"] == "per-video" and info["featurize_config"] == "lineage.featurize_config"
    mixture, sr = sf.read(out / "mixture.wav")
    # 4 s videos: one clip, zero-padded to 10 s as the featurizer does, cut back to 4 s.
    assert sr == SAMPLE_RATE and mixture.shape == (4 * SAMPLE_RATE,)
    assert info["clips"] == [0.0] and info["seconds"] == 4.0
    assert np.abs(mixture[: 3 * SAMPLE_RATE]).max() > 0.05
    for name in ("violin", "bass"):
        stem, _ = sf.read(out / f"{name}.wav")
        assert stem.shape == mixture.shape and np.isfinite(stem).all() and np.abs(stem).max() > 0


def test_a_video_url_is_downloaded_first_and_named_by_its_id(videos, checkpoint, tmp_path,
                                                              video_server, demo_corpus):
    from ial.cli import main

    url = video_server.url_template.format(video_id=demo_corpus.entries[0].video_id)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["separate", url, videos[0], "--checkpoint", checkpoint,
                                       "--out", str(out), "--seconds", "5"])
    assert result.exit_code == 0, result.output
    assert f"downloading {url} ..." in result.output
    stem = demo_corpus.entries[0].video_id
    assert sorted(os.listdir(out)) == sorted([f"{stem}.wav", "violin.wav", "mixture.wav",
                                              "separation.json", "spectrogram.png"])
    info = json.loads((out / "separation.json").read_text())
    assert info["videos"] == [url, videos[0]] and info["seconds"] == 4.0  # the 4-s video's
    missing = url.replace(stem, "gone")
    result = CliRunner().invoke(main, ["separate", missing, "--checkpoint", checkpoint,
                                       "--out", str(tmp_path / "out2")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Error: {missing}: could not download it (http_404: " in result.output
    assert not (tmp_path / "out2").exists()


def test_videos_and_stems_on_s3_each_video_downloaded_once(videos, checkpoint, s3_root,
                                                            monkeypatch):
    import ial.separate.videos as module
    import ial.storage
    from ial.storage import exists, join, upload_file

    urls = [join(s3_root, "in", os.path.basename(v)) for v in videos]
    for video, url in zip(videos, urls):
        upload_file(video, url)
    copies, local_copy = [], ial.storage.local_copy

    def counted(url):
        copies.append(url)
        return local_copy(url)

    monkeypatch.setattr(module, "local_copy", counted)
    monkeypatch.setattr("ial.storage.local_copy", counted)
    result = module.separate_videos(urls, checkpoint, join(s3_root, "out"))
    assert copies == urls  # probed and decoded from one copy each
    assert result["videos"] == urls and all(exists(u) for u in result["stems"].values())


def test_a_long_video_is_separated_clip_by_clip_into_stems_as_long_as_it(checkpoint, tmp_path):
    from ial.demo.corpus import make_class_video
    from ial.separate.videos import clip_starts, crossfade, separate_videos
    from preprocessing.featurize.clip_decode import decode_media

    assert clip_starts(None) == [0.0] == clip_starts(7.0)
    assert clip_starts(19.0) == [0.0, 9.0]  # neighbours share 1 s
    assert clip_starts(30.0) == [0.0, 9.0, 18.0, 20.0]  # the last one ends with the video
    ones = [np.ones((1, CLIP_SAMPLES), np.float32), 3 * np.ones((1, CLIP_SAMPLES), np.float32)]
    joined = crossfade(ones, [0.0, 9.0], 19 * SAMPLE_RATE)[0]
    assert np.allclose(joined[:9 * SAMPLE_RATE], 1) and np.allclose(joined[10 * SAMPLE_RATE:], 3)
    assert np.all(np.diff(joined[9 * SAMPLE_RATE:10 * SAMPLE_RATE]) > 0)  # a ramp, no step
    video = make_class_video(str(tmp_path / "flute.mp4"), "flute", seconds=12.5, seed=3)
    result = separate_videos([video], checkpoint, str(tmp_path / "out"))
    assert result["clips"] == [0.0, 2.5]
    mixture, _ = sf.read(result["mixture"])
    whole, _, _ = decode_media(video, [1.0], 32, length=int(12.5 * SAMPLE_RATE))
    assert mixture.shape == whole.shape == (int(12.5 * SAMPLE_RATE),)
    # the mixture is the soundtrack (decoded once, whole)
    assert np.abs(mixture - whole).max() < 1e-4 and np.abs(mixture[-SAMPLE_RATE:]).max() > 0.05
    stem, _ = sf.read(result["stems"]["flute"])
    residual, _ = sf.read(result["stems"]["flute_residual"])
    assert np.allclose(stem + residual, mixture, atol=1e-5)
    first, _ = sf.read(separate_videos([video], checkpoint, str(tmp_path / "first"),
                                       seconds=10)["stems"]["flute"])
    cut = int(2.5 * SAMPLE_RATE)  # before the second clip begins: the first clip's alone
    assert first.shape == (CLIP_SAMPLES,) and np.allclose(first[:cut], stem[:cut], atol=1e-5)


def test_separate_two_source_video_gives_source_and_residual(duet_video, checkpoint, tmp_path):
    from ial.separate.videos import separate_videos

    result = separate_videos([duet_video], checkpoint, str(tmp_path / "one"))
    assert result["mode"] == "single" and set(result["stems"]) == {"duet", "duet_residual"}
    mixture, _ = sf.read(result["mixture"])
    stem, _ = sf.read(result["stems"]["duet"])
    residual, _ = sf.read(result["stems"]["duet_residual"])
    assert np.abs(mixture).max() > 0.1
    np.testing.assert_allclose(stem + residual, mixture, atol=1e-5)
    assert os.path.getsize(result["spectrogram"]) > 0


def test_a_silent_soundtrack_is_named_and_the_other_video_still_separated(videos, checkpoint,
                                                                          tmp_path):
    from ial.cli import main
    from ial.demo.corpus import make_video, render_frames

    frames = render_frames("flute", 4.0, size=(120, 160), seed=5)
    quiet = make_video(str(tmp_path / "quiet.mp4"), frames, audio=np.zeros(4 * 22050) + 1e-4,
                       sample_rate=22050)  # -80 dBFS: below the ingest's silence level too
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["separate", videos[0], quiet, "--checkpoint", checkpoint,
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "note: quiet: silent soundtrack (peak at or below -50 dBFS" in result.output
    assert "violin" not in result.output.split("note:")[1]  # only the silent one is named
    info = json.loads((out / "separation.json").read_text())
    assert info["silent"] == ["quiet"]
    violin, _ = sf.read(out / "violin.wav")
    assert np.abs(violin).max() > 0.01


def test_featurize_config_sources(tmp_path):
    import pyarrow.parquet as pq

    from ial.separate.videos import featurize_config_for
    from preprocessing.shard_schema import SHARD_SCHEMA, with_metadata

    shard = str(tmp_path / "shard-00000.parquet")  # what the training lineage lists: its shards
    pq.write_table(with_metadata(SHARD_SCHEMA, {"config": {"frame_size": 128, "seed": 3}})
                   .empty_table(), shard)
    cfg, source = featurize_config_for({"lineage": {"shards": [shard]}})
    assert (cfg.frame_size, cfg.seed, source) == (128, 3, shard)

    cfg, source = featurize_config_for({"lineage": {"featurize_config": FEATURIZE}})
    assert (cfg.frame_size, source) == (112, "lineage.featurize_config")
    cfg, source = featurize_config_for({"lineage": {"configs": {"featurize": {"frame_size": 160}}}})
    assert (cfg.frame_size, source) == (160, "lineage.configs.featurize")
    missing = {"lineage": {"shards": ["/nonexistent/shard-00000.parquet"]}}
    cfg, source = featurize_config_for(missing)
    assert cfg.frame_size == 224 and source.startswith("defaults")


def test_separate_missing_checkpoint_or_an_out_that_is_a_file(videos, checkpoint, tmp_path):
    from ial.cli import main

    result = CliRunner().invoke(main, ["separate", videos[0], "--checkpoint",
                                       str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "no such checkpoint" in result.output
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    result = CliRunner().invoke(main, ["separate", videos[0], "--checkpoint", checkpoint,
                                       "--out", str(a_file)])
    assert result.exit_code == 1 and result.output.strip() == (  # before the separation
        f"Error: --out {a_file}: is a file, not a directory")


def test_a_checkpoint_that_reads_more_feature_channels_than_its_featurizer_gives(videos,
                                                                                 tmp_path):
    """A deeplab-head model (layer 4 + packed layer 2: 1024 channels) whose lineage's featurizer
    does not pack layer 2 (512): one Error line, not a shape error inside the model."""
    from ial.cli import main
    from ial.models import ModelConfig, build_model
    from ial.models.export import export_model

    cfg = ModelConfig(name="ial_cms", visual_channels=512, embed_dim=16, common_hidden=16,
                      audio_channels=[4, 8, 8, 16], visual_head="deeplab",
                      low_level_channels=512, low_level_upscale=2, aspp_channels=8,
                      low_level_reduced=4)
    ckpt = export_model(str(tmp_path / "deeplab.pt"), build_model(cfg), cfg,
                        lineage={"run": "sep", "featurize_config": FEATURIZE}, metrics={})
    res = CliRunner().invoke(main, ["separate", *videos, "--checkpoint", ckpt,
                                    "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert (f"Error: checkpoint {ckpt}: the model reads 1024 visual feature channels (layer 4 + "
            "packed layer 2), the features have 512 (the featurizer's)") in res.output


@pytest.fixture(scope="module")
def bad_videos(tmp_path_factory):
    """Inputs ``ial separate`` cannot use: no audio, audio only, not a video, too short."""
    from ial.demo.corpus import make_class_video
    from ial.media import run_ffmpeg

    out = tmp_path_factory.mktemp("bad")
    silent = make_class_video(str(out / "noaudio.mp4"), "violin", 4.0, seed=3, with_audio=False)
    audio_only = str(out / "audio.m4a")
    run_ffmpeg(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050", "-t", "4",
                "-c:a", "aac", audio_only])
    text = out / "notes.txt"
    text.write_text("not a video\n")
    short = make_class_video(str(out / "short.mp4"), "bass", 2.0, seed=4)  # frames at 1 and 3 s
    return {"noaudio": silent, "audio": audio_only, "text": str(text), "short": short,
            "missing": str(out / "nope.mp4")}


@pytest.mark.parametrize("which, message", [
    ("noaudio", "has no audio stream; ial separate separates a video's soundtrack"),
    ("audio", "has no video stream (audio only); the video's frames at 1, 3 s"),
    ("text", "not a video ffmpeg can read"),
    ("short", "is 2.00 s long; the checkpoint's featurizer takes frames at 1, 3 s, so the video "
              "must be longer than 3 s"),
    ("missing", "file not found"),
])
def test_a_video_it_cannot_use_is_one_clear_line(bad_videos, videos, checkpoint, tmp_path, which,
                                                 message):
    from ial.cli import main

    res = CliRunner().invoke(main, ["separate", videos[0], bad_videos[which], "--checkpoint",
                                    checkpoint, "--out", str(tmp_path / "out")])
    assert res.exit_code == 1, res.output
    assert f"Error: {bad_videos[which]}: {message}" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "out").exists()
