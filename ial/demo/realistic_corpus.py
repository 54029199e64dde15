"""A realistic corpus for the separation-quality benchmark: sampled General-MIDI instruments
playing real polyphonic music lines, pictures of the instrument among distractors, served as a
VGGSound CSV (``benchmarks/corpus_realistic.py``, ``benchmarks/separation_quality.py``).

- **Sound**: each video is one voice (soprano, alto, tenor or bass) of a Bach chorale from
  music21's corpus, rendered by fluidsynth with a General-MIDI soundfont (Debian's
  ``timgm6mb-soundfont`` by default) as one of 8 instruments whose pitch ranges overlap (the line is
  moved by octaves into the instrument's range), with a random tempo (70–110 bpm), loudness
  (−6…+3 dB) and reverb (room size 0.1–0.8); the line loops to the video's length.
- **Picture**: the instrument as a drawn icon (its own shape and colours) drifting over a
  textured background among 3 moving distractor shapes, so the visual net has to localise it.
- **Size**: ``train_videos`` per class × ``video_seconds / section_seconds`` 10-s sections (72 × 4
  = 288 per class, 2304 in all by default) for training; test videos use other chorales (music)
  and other renderings (recordings) than any training video. The train videos of
  ``val_chorale_fraction`` of the train-side chorales are listed as ``val``: validation on music
  the model never heard, as test is (a split carved by video id shares the chorales).
- **Manifest**: VGGSound CSV (``youtube_id,start_seconds,label,split``, quoted labels with commas,
  11-character YouTube-like ids, shuffled rows); ``missing_fraction`` of the videos (~10 %) are
  listed but not served (they ingest as ``unavailable``).

Everything derives from ``seed`` (each video from its own sub-seed, so the result does not depend
on the worker count). Needs ``fluidsynth`` and a soundfont (Debian packages) and ``music21`` (pip);
``missing_tools()`` says what is absent.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ial.demo.corpus import make_video, video_id, write_vggsound_csv
from ial.demo.corpus_tools import default_soundfont, install_tools, missing_tools  # noqa: F401


@dataclasses.dataclass(frozen=True)
class Instrument:
    label: str  # VGGSound-style class name
    program: int  # General-MIDI program (0-based)
    low: int  # MIDI pitch range the line is moved into
    high: int
    icon: str  # how it is drawn (``_draw_icon``)


INSTRUMENTS = (
    Instrument("playing violin, fiddle", 40, 55, 93, "violin"),
    Instrument("playing cello", 42, 36, 72, "cello"),
    Instrument("playing flute", 73, 60, 93, "flute"),
    Instrument("playing clarinet", 71, 50, 86, "clarinet"),
    Instrument("playing trumpet", 56, 55, 82, "trumpet"),
    Instrument("playing saxophone", 65, 49, 80, "saxophone"),
    Instrument("playing acoustic guitar", 24, 40, 76, "guitar"),
    Instrument("playing piano", 0, 36, 84, "piano"),
)


# A smoke-sized corpus (``quick``): 3 classes, 4 + 1 videos each, 20-s videos (2 sections); too
# few videos for a val split by music (it would be one video of one class): training carves one.
QUICK = dict(classes=3, train_videos=4, test_videos=1, video_seconds=20.0, chorales=30,
             val_chorale_fraction=0.0)


@dataclasses.dataclass
class RealisticCorpusConfig:
    out_dir: str
    seed: int = 0
    classes: int = 8  # the first N of INSTRUMENTS
    train_videos: int = 72  # per class
    test_videos: int = 8  # per class (other chorales, other renderings)
    video_seconds: float = 40.0
    section_seconds: float = 10.0
    missing_fraction: float = 0.1  # videos listed in the CSV but not served
    size: tuple[int, int] = (160, 120)  # (width, height) px
    fps: int = 8
    sample_rate: int = 22050  # Hz
    chorales: int = 200  # the first N 4-voice Bach chorales of music21's corpus
    test_chorale_fraction: float = 0.2  # chorales kept for the test videos only
    val_chorale_fraction: float = 0.1  # of the other chorales: their videos are the val split
    workers: int = 2
    soundfont: str | None = None  # default: corpus_tools.default_soundfont()


@dataclasses.dataclass
class RealisticCorpus:
    out_dir: str
    videos_dir: str
    manifest: str
    classes: list[str]
    rows: list[tuple[str, float, str, str]]  # every CSV row (missing videos included)
    served: int  # videos written
    missing: int  # videos listed but not served


# ------------------------------------------------------------------------------- the music

def chorale_voices(limit: int | None = None, cache: str | None = None
                   ) -> list[list[list[tuple[int, float, float]]]]:
    """Bach chorales from music21's corpus with 4 voices: per chorale, per voice, its notes as
    ``(midi pitch, onset, duration)`` in quarter lengths. In the corpus's (sorted) order. Parsing
    costs ~0.13 s a file: ``cache`` (a JSON path) keeps the result."""
    import json

    if cache and os.path.exists(cache):
        with open(cache) as f:
            data = json.load(f)
        if data.get("limit") == limit:
            return [[[tuple(n) for n in v] for v in c] for c in data["chorales"]]
    from music21 import corpus

    out = []
    for path in sorted(corpus.getComposer("bach")):
        if limit is not None and len(out) >= limit:
            break
        try:
            score = corpus.parse(path)
        except Exception:  # noqa: BLE001 - a file music21 cannot read is left out
            continue
        if len(score.parts) != 4:
            continue
        voices = []
        for part in score.parts:
            notes = [(int(n.pitch.midi), float(n.offset), float(n.duration.quarterLength))
                     for n in part.flatten().notes if n.isNote and n.duration.quarterLength > 0]
            voices.append(notes)
        if all(len(v) >= 8 for v in voices):
            out.append(voices)
    if cache:
        tmp = f"{cache}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"limit": limit, "chorales": out}, f)
        os.replace(tmp, cache)
    return out


def _fit_range(notes, inst: Instrument):
    """The line moved by whole octaves so its median pitch sits in the instrument's range."""
    median = float(np.median([p for p, _, _ in notes]))
    centre = (inst.low + inst.high) / 2
    shift = 12 * int(round((centre - median) / 12))
    return [(min(max(p + shift, inst.low), inst.high), o, d) for p, o, d in notes]


def _write_midi(path: str, notes, length_ql: float, inst: Instrument, bpm: float,
                velocity: int, repeats: int) -> None:
    from music21 import instrument, note, stream, tempo

    part = stream.Part()
    part.insert(0, instrument.instrumentFromMidiProgram(inst.program))
    part.insert(0, tempo.MetronomeMark(number=bpm))
    for r in range(repeats):
        for pitch, onset, dur in notes:
            n = note.Note(pitch)
            n.duration.quarterLength = dur
            n.volume.velocity = velocity
            part.insert(onset + r * length_ql, n)
    part.write("midi", fp=path)


def render_audio(notes, length_ql: float, inst: Instrument, seconds: float, sample_rate: int,
                 rng: np.random.Generator, soundfont: str) -> np.ndarray:
    """One voice line played by ``inst`` for ``seconds`` (looped), mono float32 (L,)."""
    import soundfile as sf

    bpm = float(rng.uniform(70, 110))
    gain_db = float(rng.uniform(-6, 3))
    room = float(rng.uniform(0.1, 0.8))
    repeats = int(np.ceil(seconds / (length_ql * 60.0 / bpm))) + 1
    with tempfile.TemporaryDirectory(prefix="ial-corpus-") as tmp:
        mid, wav = os.path.join(tmp, "v.mid"), os.path.join(tmp, "v.wav")
        _write_midi(mid, _fit_range(notes, inst), length_ql, inst, bpm, 96, repeats)
        subprocess.run(["fluidsynth", "-ni", "-q", "-r", str(sample_rate), "-g", "0.6",
                        "-o", f"synth.reverb.room-size={room:.3f}", "-F", wav, soundfont, mid],
                       check=True, capture_output=True, timeout=300)
        audio, _ = sf.read(wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)[: int(round(seconds * sample_rate))]
    audio = np.pad(audio, (0, int(round(seconds * sample_rate)) - audio.shape[0]))
    peak = float(np.abs(audio).max()) or 1.0
    return (audio / peak * 0.5 * 10 ** (gain_db / 20)).astype(np.float32)


# ------------------------------------------------------------------------------ the picture

def _texture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A smooth coloured noise background. Shape: (h, w, 3) uint8."""
    coarse = rng.uniform(0, 1, (h // 8 + 2, w // 8 + 2, 3))
    ys, xs = np.linspace(0, coarse.shape[0] - 1.001, h), np.linspace(0, coarse.shape[1] - 1.001, w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    c = coarse
    smooth = ((1 - fy) * (1 - fx) * c[y0][:, x0] + (1 - fy) * fx * c[y0][:, x0 + 1]
              + fy * (1 - fx) * c[y0 + 1][:, x0] + fy * fx * c[y0 + 1][:, x0 + 1])
    base = rng.uniform(60, 170, 3)
    return np.clip(base + (smooth - 0.5) * 90, 0, 255).astype(np.uint8)


def _draw_icon(kind: str, size: int):
    """An RGBA sprite of an instrument (or a distractor shape). Returns a PIL image."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    s = size
    wood, dark, gold, silver = (150, 80, 30, 255), (60, 30, 10, 255), (230, 180, 40, 255), (
        200, 200, 210, 255)
    if kind in ("violin", "cello", "guitar"):
        body = {"violin": wood, "cello": (110, 50, 20, 255), "guitar": (215, 170, 110, 255)}[kind]
        scale = {"violin": 0.7, "cello": 0.95, "guitar": 0.85}[kind]
        w = int(s * 0.45 * scale)
        cx = s // 2
        d.ellipse([cx - w, int(s * 0.45), cx + w, int(s * 0.95)], fill=body)
        d.ellipse([cx - int(w * 0.8), int(s * 0.25), cx + int(w * 0.8), int(s * 0.62)], fill=body)
        d.rectangle([cx - 2, 0, cx + 2, int(s * 0.5)], fill=dark)
        if kind == "guitar":
            d.ellipse([cx - 5, int(s * 0.6), cx + 5, int(s * 0.7)], fill=dark)
    elif kind == "flute":
        d.rectangle([0, s // 2 - 3, s - 1, s // 2 + 3], fill=silver)
        for x in range(8, s - 4, 7):
            d.ellipse([x, s // 2 - 2, x + 3, s // 2 + 1], fill=(80, 80, 90, 255))
    elif kind == "clarinet":
        d.rectangle([s // 2 - 4, 0, s // 2 + 4, s - 8], fill=(20, 20, 20, 255))
        d.polygon([(s // 2 - 9, s - 1), (s // 2 + 9, s - 1), (s // 2, s - 10)], fill=(20, 20, 20,
                                                                                      255))
        for y in range(6, s - 10, 7):
            d.ellipse([s // 2 - 2, y, s // 2 + 2, y + 3], fill=silver)
    elif kind == "trumpet":
        d.rectangle([0, s // 2 - 3, int(s * 0.7), s // 2 + 3], fill=gold)
        d.polygon([(int(s * 0.65), s // 2), (s - 1, s // 2 - 12), (s - 1, s // 2 + 12)], fill=gold)
        for x in (int(s * 0.3), int(s * 0.4), int(s * 0.5)):
            d.rectangle([x, s // 2 - 9, x + 3, s // 2 - 3], fill=(150, 110, 20, 255))
    elif kind == "saxophone":
        d.arc([int(s * 0.2), int(s * 0.3), int(s * 0.8), s - 2], 0, 180, fill=gold, width=7)
        d.rectangle([int(s * 0.7), 2, int(s * 0.8), int(s * 0.65)], fill=gold)
        d.ellipse([int(s * 0.1), int(s * 0.45), int(s * 0.35), int(s * 0.7)], fill=gold)
    elif kind == "piano":
        d.rectangle([0, int(s * 0.3), s - 1, int(s * 0.7)], fill=(15, 15, 15, 255))
        for x in range(2, s - 4, 6):
            d.rectangle([x, int(s * 0.5), x + 4, int(s * 0.68)], fill=(245, 245, 245, 255))
    else:  # distractors: muted shapes
        shape, colour = kind.split(":")
        rgb = tuple(int(c) for c in colour.split(",")) + (255,)
        if shape == "circle":
            d.ellipse([2, 2, s - 3, s - 3], fill=rgb)
        elif shape == "square":
            d.rectangle([4, 4, s - 5, s - 5], fill=rgb)
        else:
            d.polygon([(s // 2, 2), (s - 3, s - 3), (2, s - 3)], fill=rgb)
    return img


def render_frames(icon: str, seconds: float, fps: int, size: tuple[int, int],
                  rng: np.random.Generator) -> np.ndarray:
    """The instrument drifting among 3 moving distractors. Shape: (T, H, W, 3) uint8."""
    from PIL import Image

    w, h = size
    n = int(round(seconds * fps))
    background = Image.fromarray(_texture(rng, w, h))
    sprites = [(_draw_icon(icon, int(h * 0.4)), True)]
    for _ in range(3):
        shape = ("circle", "square", "triangle")[int(rng.integers(3))]
        colour = ",".join(str(int(c)) for c in rng.uniform(90, 200, 3))
        sprites.append((_draw_icon(f"{shape}:{colour}", int(h * rng.uniform(0.2, 0.3))), False))
    paths = []
    for sprite, _ in sprites:
        start = rng.uniform(0, 1, 2) * (np.array([w, h]) - sprite.size[0])
        velocity = rng.uniform(-1, 1, 2) * 2.0  # px per frame
        paths.append((start, velocity))
    frames = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        canvas = background.copy()
        for (sprite, _), (start, velocity) in zip(sprites, paths):
            span = np.array([w, h]) - sprite.size[0]
            pos = start + velocity * t
            pos = np.abs(((pos + span) % (2 * span)) - span)  # bounce off the edges
            canvas.paste(sprite, (int(pos[0]), int(pos[1])), sprite)
        frames[t] = np.asarray(canvas)
    return frames


# ------------------------------------------------------------------------------ the corpus

def _plan(cfg: RealisticCorpusConfig, n_chorales: int) -> list[dict]:
    """Every video to make (or to list as missing): id, class, split (train/val/test), chorale,
    voice, seed."""
    rng = np.random.default_rng([cfg.seed, 0])
    order = rng.permutation(n_chorales)
    n_test = max(1, int(round(n_chorales * cfg.test_chorale_fraction)))
    pools = {"test": order[:n_test], "train": order[n_test:]}
    jobs, ids = [], set()
    for c in range(cfg.classes):
        for split, count in (("train", cfg.train_videos), ("test", cfg.test_videos)):
            for k in range(count):
                vid = video_id(rng)
                while vid in ids:
                    vid = video_id(rng)
                ids.add(vid)
                jobs.append({"id": vid, "class": c, "split": split,
                             "chorale": int(pools[split][int(rng.integers(len(pools[split])))]),
                             "voice": int(rng.integers(4)), "seed": int(rng.integers(2**31)),
                             "missing": bool(rng.uniform() < cfg.missing_fraction)})
    n_val = int(round(len(pools["train"]) * cfg.val_chorale_fraction))  # own generator: the
    val = set(np.random.default_rng([cfg.seed, 2]).choice(pools["train"], n_val, replace=False)
              .tolist())  # videos above stay those of a corpus without a val split
    for j in jobs:
        j["split"] = "val" if j["split"] == "train" and j["chorale"] in val else j["split"]
    return jobs


def _make_one(job: dict, voices, cfg: RealisticCorpusConfig, soundfont: str,
              videos_dir: str) -> str:
    path = os.path.join(videos_dir, f"{job['id']}.mp4")
    if os.path.exists(path):  # resumable: a finished video is never made again
        return path
    inst = INSTRUMENTS[job["class"]]
    rng = np.random.default_rng(job["seed"])
    notes = voices[job["voice"]]
    length_ql = max(o + d for _, o, d in notes)
    audio = render_audio(notes, length_ql, inst, cfg.video_seconds, cfg.sample_rate, rng,
                         soundfont)
    frames = render_frames(inst.icon, cfg.video_seconds, cfg.fps, cfg.size, rng)
    return make_video(path, frames, cfg.fps, audio, cfg.sample_rate)


def _make_batch(args) -> list[str]:
    jobs, chorales, cfg, soundfont, videos_dir = args
    return [_make_one(j, chorales[j["chorale"]], cfg, soundfont, videos_dir) for j in jobs]


def generate_realistic_corpus(cfg: RealisticCorpusConfig, progress: bool = False
                              ) -> RealisticCorpus:
    """Build (or finish building) the corpus under ``cfg.out_dir``: ``videos/<id>.mp4`` and
    ``vggsound.csv``. Deterministic in ``cfg.seed``; videos already there are kept."""
    missing = missing_tools(cfg.soundfont)
    if missing:
        raise RuntimeError("the realistic corpus needs " + ", ".join(missing) + "; run "
                           "`python benchmarks/corpus_realistic.py --setup` (root) first")
    soundfont = cfg.soundfont or default_soundfont()
    out = Path(cfg.out_dir)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    chorales = chorale_voices(cfg.chorales, str(out / "chorales.json"))
    jobs = _plan(cfg, len(chorales))
    served = [j for j in jobs if not j["missing"]]
    batches = [served[i::max(1, cfg.workers * 4)] for i in range(max(1, cfg.workers * 4))]
    from tqdm import tqdm

    with ProcessPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
        args = [(b, chorales, cfg, soundfont, str(videos)) for b in batches if b]
        for _ in tqdm(pool.map(_make_batch, args), total=len(args), desc="corpus",
                      disable=not progress):
            pass
    sections = int(cfg.video_seconds // cfg.section_seconds)
    rows = [(j["id"], float(s * cfg.section_seconds), INSTRUMENTS[j["class"]].label, j["split"])
            for j in jobs for s in range(sections)]
    rng = np.random.default_rng([cfg.seed, 1])
    rows = [rows[i] for i in rng.permutation(len(rows))]
    manifest = write_vggsound_csv(out / "vggsound.csv", rows)
    return RealisticCorpus(str(out), str(videos), manifest,
                           [i.label for i in INSTRUMENTS[:cfg.classes]], rows, len(served),
                           len(jobs) - len(served))
