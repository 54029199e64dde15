"""The realistic benchmark corpus (``ial.demo.realistic_corpus``): real fluidsynth renderings of
music21's Bach chorales, deterministic, resumable, a VGGSound CSV the ingest reader accepts.

The rendering tests need fluidsynth, a GM soundfont (Debian) and music21 (pip, dev extra); CI
installs them (``.ci/run``), elsewhere they are skipped with what is missing."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from ial.demo.realistic_corpus import (INSTRUMENTS, RealisticCorpusConfig, _plan, chorale_voices,
                                       generate_realistic_corpus, missing_tools, render_audio)
from ial.media import ffmpeg_binary
from preprocessing.ingest.manifests import read_manifest

MISSING = missing_tools()
needs_tools = pytest.mark.skipif(bool(MISSING), reason="needs " + ", ".join(MISSING))


def test_plan_is_deterministic_and_keeps_test_chorales_out_of_training(tmp_path):
    cfg = RealisticCorpusConfig(str(tmp_path), seed=3, classes=4, train_videos=10, test_videos=3)
    jobs = _plan(cfg, 40)
    assert jobs == _plan(cfg, 40)
    assert jobs != _plan(RealisticCorpusConfig(str(tmp_path), seed=4, classes=4, train_videos=10,
                                               test_videos=3), 40)
    assert len(jobs) == 4 * 13 and len({j["id"] for j in jobs}) == len(jobs)
    train = {j["chorale"] for j in jobs if j["split"] == "train"}
    test = {j["chorale"] for j in jobs if j["split"] == "test"}
    val = {j["chorale"] for j in jobs if j["split"] == "val"}
    assert train and test and not train & test  # test music is never heard in training
    assert val and not val & (train | test)  # nor validation music
    assert all(len(j["id"]) == 11 for j in jobs)
    no_val = _plan(RealisticCorpusConfig(str(tmp_path), seed=3, classes=4, train_videos=10,
                                         test_videos=3, val_chorale_fraction=0.0), 40)
    assert {j["split"] for j in no_val} == {"train", "test"}
    # the val split only relists train videos: the same videos, renderings and missing ones
    assert [{**j, "split": "train" if j["split"] == "val" else j["split"]} for j in jobs] == no_val


@needs_tools
def test_rendering_is_deterministic_and_each_instrument_sounds_its_own_way():
    voices = chorale_voices(limit=1)[0]
    notes = voices[0]
    length = max(o + d for _, o, d in notes)
    soundfont = next(p for p in ("/usr/share/sounds/sf2/TimGM6mb.sf2",
                                 "/usr/share/sounds/sf2/FluidR3_GM.sf2") if os.path.exists(p))

    def render(inst, seed):
        return render_audio(notes, length, inst, 3.0, 22050, np.random.default_rng(seed),
                            soundfont)

    a, b = render(INSTRUMENTS[2], 7), render(INSTRUMENTS[2], 7)
    assert a.shape == (66150,) and np.array_equal(a, b)
    assert np.sqrt(np.mean(a ** 2)) > 0.01  # not silence
    cello = render(INSTRUMENTS[1], 7)

    def centroid(x):
        mag = np.abs(np.fft.rfft(x))
        return float((mag * np.fft.rfftfreq(x.size, 1 / 22050)).sum() / mag.sum())

    assert centroid(a) > 1.5 * centroid(cello)  # the flute sits well above the cello


@needs_tools
def test_tiny_corpus_is_a_vggsound_manifest_with_missing_videos_and_resumes(tmp_path):
    cfg = RealisticCorpusConfig(str(tmp_path / "c"), seed=1, classes=2, train_videos=2,
                                test_videos=1, video_seconds=20.0, chorales=6,
                                missing_fraction=0.34, workers=2)
    corpus = generate_realistic_corpus(cfg)
    assert corpus.served + corpus.missing == 6 and corpus.missing >= 1
    manifest = read_manifest(corpus.manifest, "vggsound")
    assert len(manifest) == 6 * 2  # two 10-s sections per 20-s video
    assert {e.label for e in manifest} == {i.label for i in INSTRUMENTS[:2]}
    assert "\"playing violin, fiddle\"" in open(corpus.manifest).read()  # quoted comma label
    served = sorted(os.listdir(corpus.videos_dir))
    assert len(served) == corpus.served and all(n.endswith(".mp4") for n in served)
    listed = {e.video_id for e in manifest}
    assert {n[:-4] for n in served} < listed  # the missing ones are listed, not served

    import subprocess
    wav = tmp_path / "a.wav"
    subprocess.run([ffmpeg_binary(), "-v", "error", "-i", os.path.join(corpus.videos_dir,
                    served[0]), "-ac", "1", str(wav)], check=True)
    audio, rate = sf.read(wav)
    assert abs(audio.size / rate - 20.0) < 0.2 and np.abs(audio).max() > 0.05

    stamps = {n: os.stat(os.path.join(corpus.videos_dir, n)).st_mtime_ns for n in served}
    again = generate_realistic_corpus(cfg)  # resumable: nothing made twice, same manifest
    assert again.rows == corpus.rows
    assert stamps == {n: os.stat(os.path.join(corpus.videos_dir, n)).st_mtime_ns
                      for n in served}
