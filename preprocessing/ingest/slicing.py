"""Cut one clip of exactly ``duration`` seconds out of a media file with ffmpeg (ffmpeg-python).

``slice_clip(src, dst, start, duration, fps, min_side, audio_rate)`` writes an mp4 with

- video: H.264 at a constant ``fps`` (default 8), scaled so its shorter side is ``min_side`` px
  (224: ready for 224x224 crops), exactly ``round(duration * fps)`` frames;
- audio: AAC, mono, ``audio_rate`` Hz (>= 11025), exactly ``round(duration * audio_rate)``
  samples;

both streams starting at the same instant (timestamps reset after an accurate input seek), so
audio and video stay in sync. One ffmpeg process also measures the audio level (volumedetect)
for the ``silent`` flag and counts the frames/samples it wrote.

The same clip format is produced in one pass by yt-dlp's section download: ``clip_encode_args``
gives those ffmpeg output options, and ``finalize_section`` then measures the section (a decode
pass: frames, samples, level) and keeps it when it is exact, re-slicing it (pad/trim) otherwise.

Problems with the input are raised as ``SliceInvalid(reason)``: ``unreadable_source``,
``no_audio_stream``, ``no_video_stream``, ``section_past_end`` (the file is shorter than
``start + duration``), ``short_source`` (fewer frames/samples decodable than promised: a
truncated/corrupt file). A shortfall up to ``pad_tolerance`` seconds (AAC priming, frame
rounding) is padded; anything more is reported, never hidden.
"""

from __future__ import annotations

import dataclasses
import re

import ffmpeg

from ial.media import parse_stream_info, probe_media, run_ffmpeg
from ial.signal import SILENCE_DBFS
from preprocessing.ingest.outcomes import SourceInvalid

MIN_AUDIO_RATE = 11025  # Hz


class SliceInvalid(SourceInvalid):
    """The input cannot give a valid clip (recorded as ``invalid``, as a broken download is);
    ``reason`` is a short stable token, ``detail`` what ffmpeg or the check found."""


@dataclasses.dataclass
class SliceResult:
    path: str
    duration: float  # s: min(video frames / fps, audio samples / rate)
    frames: int
    samples: int
    width: int | None
    height: int | None
    silent: bool
    max_volume_db: float | None


def _scale_expr(min_side: int) -> tuple[str, str]:
    """Width/height expressions: shorter side = ``min_side`` px, the other even, aspect kept."""
    return f"if(lte(iw,ih),{min_side},-2)", f"if(lte(iw,ih),-2,{min_side})"


def clip_encode_args(fps: float = 8, min_side: int = 224, audio_rate: int = 22050,
                     preset: str = "veryfast", crf: int = 23) -> list[str]:
    """ffmpeg output options that encode a (section of an) input straight into the clip format
    (used as yt-dlp's section-download output arguments)."""
    vf = [f"fps={fps}"]
    if min_side:
        w, h = _scale_expr(min_side)
        vf.append(f"scale=w='{w}':h='{h}'")
    vf.append("setsar=1")
    return ["-vf", ",".join(vf), "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
            "-pix_fmt", "yuv420p", "-fps_mode", "cfr",
            "-af", f"aresample={audio_rate},aformat=sample_fmts=fltp:channel_layouts=mono",
            "-c:a", "aac", "-ar", str(audio_rate), "-ac", "1", "-movflags", "+faststart"]


@dataclasses.dataclass
class ClipMeasure:
    frames: int
    samples: int
    max_volume_db: float | None


def measure_clip(path: str, timeout: float = 120) -> ClipMeasure:
    """Decode ``path`` once: video frames, audio samples (mono), peak level (dBFS).

    Audio samples past the container's duration are codec padding, not clip content: ffmpeg 5.x
    (Debian 12's) decodes an AAC stream's end padding (a 4 s clip at 11025 Hz gives 45056 samples,
    a multiple of the 1024-sample AAC frame) where newer builds trim it to 44100. ``samples`` is
    capped at ``duration × rate`` of the container so both builds measure the same clip alike.
    """
    inp = ffmpeg.input(path)
    out = ffmpeg.output(inp.video, inp.audio.filter("aformat", channel_layouts="mono")
                        .filter("volumedetect"), "-", f="null")
    text = _ffmpeg_log(out.global_args("-stats").get_args(), timeout)
    samples = _last_int(r"n_samples:\s*(\d+)", text)
    info = parse_stream_info(text)
    if info["duration"] and info["audio_rate"]:
        samples = min(samples, int(round(info["duration"] * info["audio_rate"])))
    return ClipMeasure(_last_int(r"frame=\s*(\d+)", text), samples,
                       _last_float(r"max_volume:\s*(-?[\d.]+|-inf) dB", text))


def finalize_section(section: str, dst: str, duration: float = 10.0, fps: float = 8,
                     min_side: int = 224, audio_rate: int = 22050, silence_db: float = SILENCE_DBFS,
                     pad_tolerance: float = 0.25, start: float = 0.0, **slice_kw) -> SliceResult:
    """Turn a section already encoded with ``clip_encode_args`` into the clip ``dst``: kept as
    is (renamed) when it has exactly the requested frames, samples, size and rate; re-sliced
    (pad/trim within ``pad_tolerance``) otherwise. ``start`` > 0: ``section`` is the whole video
    (its server ignored Range requests) and the clip is cut from ``start`` s. Raises
    SliceInvalid like ``slice_clip``."""
    import os

    if start > 0:
        return slice_clip(section, dst, start, duration, fps, min_side, audio_rate, silence_db,
                          pad_tolerance, **slice_kw)
    info = check_source(section, 0.0, duration, pad_tolerance)
    m = measure_clip(section)
    n_frames, n_samples = int(round(duration * fps)), int(round(duration * audio_rate))
    short_side = min(info["width"] or 0, info["height"] or 0)
    exact = (m.frames == n_frames and m.samples == n_samples
             and info["audio_rate"] == audio_rate and (not min_side or short_side == min_side))
    if not exact:
        return slice_clip(section, dst, 0.0, duration, fps, min_side, audio_rate, silence_db,
                          pad_tolerance, **slice_kw)
    os.replace(section, dst)
    return SliceResult(dst, duration, m.frames, m.samples, info["width"], info["height"],
                       bool(m.max_volume_db is None or m.max_volume_db <= silence_db),
                       m.max_volume_db)


def check_source(src: str, start: float, duration: float, tolerance: float = 0.25) -> dict:
    """Probe ``src`` and raise SliceInvalid when it cannot hold ``[start, start + duration]``
    with audio and video. Returns the probe dict."""
    info = probe_media(src)
    if not (info["has_audio"] or info["has_video"]):
        raise SliceInvalid("unreadable_source", info.get("error", "no streams"))
    if not info["has_audio"]:
        raise SliceInvalid("no_audio_stream", "the input has no audio stream")
    if not info["has_video"]:
        raise SliceInvalid("no_video_stream", "the input has no video stream")
    total = info["duration"]
    if total is not None and start + duration > total + tolerance:
        raise SliceInvalid("section_past_end", f"the input is {total:.2f} s; the section ends "
                           f"at {start + duration:.2f} s")
    return info


def slice_clip(src: str, dst: str, start: float = 0.0, duration: float = 10.0, fps: float = 8,
               min_side: int = 224, audio_rate: int = 22050, silence_db: float = SILENCE_DBFS,
               pad_tolerance: float = 0.25, preset: str = "veryfast", crf: int = 23,
               timeout: float = 300) -> SliceResult:
    """Write the clip ``[start, start + duration]`` s of ``src`` to local ``dst`` (see module doc).

    ``min_side`` 0 keeps the input size. Raises SliceInvalid for bad inputs.
    """
    if audio_rate < MIN_AUDIO_RATE:
        raise ValueError(f"audio_rate must be >= {MIN_AUDIO_RATE} Hz, got {audio_rate}")
    check_source(src, start, duration, pad_tolerance)
    n_frames = int(round(duration * fps))
    n_samples = int(round(duration * audio_rate))
    inp = ffmpeg.input(src, ss=f"{start:.6f}", t=f"{duration + pad_tolerance:.6f}")
    v = inp.video.filter("setpts", "PTS-STARTPTS").filter("fps", fps=fps)
    if min_side:
        w, h = _scale_expr(min_side)
        v = v.filter("scale", w=w, h=h)
    v = (v.filter("setsar", "1")
          .filter("tpad", stop_mode="clone", stop_duration=f"{pad_tolerance:.3f}")
          .filter("trim", end_frame=n_frames))
    a = (inp.audio.filter("asetpts", "PTS-STARTPTS")
         .filter("aresample", audio_rate)
         .filter("aformat", sample_fmts="fltp", channel_layouts="mono")
         .filter("apad", pad_dur=f"{pad_tolerance:.3f}")
         .filter("atrim", end_sample=n_samples))
    split = a.filter_multi_output("asplit")
    clip = ffmpeg.output(v, split[0], dst, vcodec="libx264", preset=preset, crf=crf,
                         pix_fmt="yuv420p", acodec="aac", ac=1, ar=audio_rate, f="mp4",
                         movflags="+faststart", fps_mode="cfr")
    level = ffmpeg.output(split[1].filter("volumedetect"), "-", f="null")
    cmd = ffmpeg.merge_outputs(clip, level).global_args("-stats").overwrite_output()
    text = _ffmpeg_log(cmd.get_args(), timeout)
    frames = _last_int(r"frame=\s*(\d+)", text)
    samples = _last_int(r"n_samples:\s*(\d+)", text)
    max_db = _last_float(r"max_volume:\s*(-?[\d.]+|-inf) dB", text)
    got = min(frames / fps, samples / audio_rate)
    if frames < n_frames or samples < n_samples:
        # check_source found a long-enough header: the data ends early (cut/corrupt file)
        raise SliceInvalid(
            "truncated_source",
            f"decoded {frames / fps:.2f} s of video and {samples / audio_rate:.2f} s of audio; "
            f"{duration:.2f} s requested (truncated or corrupt input)")
    info = probe_media(dst)
    return SliceResult(dst, got, frames, samples, info.get("width"), info.get("height"),
                       bool(max_db is None or max_db <= silence_db), max_db)


def _ffmpeg_log(args: list[str], timeout: float) -> str:
    """Run ffmpeg ``args`` (no binary name) at log level info; return its log (stderr), which
    holds the measurements. Raises SliceInvalid("unreadable_source") with the end of the log
    when ffmpeg fails."""
    try:
        proc = run_ffmpeg(args, timeout, loglevel="info")
    except RuntimeError as exc:
        raise SliceInvalid("unreadable_source", str(exc)) from exc
    return proc.stderr.decode("utf-8", "replace")


def _last_int(pattern: str, text: str) -> int:
    found = re.findall(pattern, text)
    return int(found[-1]) if found else 0


def _last_float(pattern: str, text: str) -> float | None:
    found = re.findall(pattern, text)
    if not found:
        return None
    return float("-inf") if found[-1] == "-inf" else float(found[-1])
