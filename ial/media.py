"""The one place that finds the ffmpeg binary.

Order: ``$IAL_FFMPEG`` if set, else ``ffmpeg`` on PATH (the system build), else the static build
shipped by ``imageio-ffmpeg`` (which has no ffprobe: the project never needs ffprobe; it probes
with ``ffmpeg -i`` through ``probe_media``).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess


@functools.lru_cache(maxsize=1)
def ffmpeg_binary() -> str:
    """Absolute path of the ffmpeg executable to use."""
    env = os.environ.get("IAL_FFMPEG")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise FileNotFoundError(f"IAL_FFMPEG={env!r} is not an executable file")
        return env
    system = shutil.which("ffmpeg")
    if system:
        return system
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise FileNotFoundError("no ffmpeg on PATH and imageio-ffmpeg is not installed") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=1)
def ffmpeg_version() -> str:
    out = subprocess.run([ffmpeg_binary(), "-version"], capture_output=True, text=True).stdout
    m = re.match(r"ffmpeg version (\S+)", out)
    return m.group(1) if m else "unknown"


def run_ffmpeg(args: list[str], timeout: float | None = 600,
               loglevel: str = "error") -> subprocess.CompletedProcess:
    """Run ffmpeg with ``args`` (no binary name), capturing stdout and stderr; raises RuntimeError
    on non-zero exit with ffmpeg's last stderr lines in the message.

    ``loglevel`` "error" keeps stderr quiet; "info" keeps the reports callers parse from it
    (``frame=``, ``volumedetect``'s ``n_samples``/``max_volume``, the input's stream lines)."""
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", loglevel, *args]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {' | '.join(tail)}")
    return proc


def input_report(source: str, headers: dict[str, str] | None = None,
                 read_timeout: float | None = None, timeout: float | None = None,
                 env: dict[str, str] | None = None) -> str:
    """What ``ffmpeg -i source`` says of its input (its stderr: ``Duration: ...``, one
    ``Stream #...`` line per stream, or why it cannot read it). ``headers``: HTTP request
    headers for a URL; ``read_timeout`` (s): for each network read; ``timeout`` (s): for the
    whole probe; ``env``: ffmpeg's environment (a proxy). Raises ``subprocess.TimeoutExpired``."""
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin"]
    if read_timeout is not None:
        cmd += ["-rw_timeout", str(int(read_timeout * 1e6))]
    if headers and source.startswith("http"):
        cmd += ["-headers", "".join(f"{k}: {v}\r\n" for k, v in headers.items())]
    proc = subprocess.run([*cmd, "-i", source], capture_output=True, text=True,
                          errors="replace", timeout=timeout, env=env)
    return proc.stderr


def probe_media(path: str) -> dict:
    """Stream facts from ``ffmpeg -i`` (no ffprobe needed).

    Returns ``{"duration": s or None, "has_audio": bool, "has_video": bool,
    "audio_rate": Hz or None, "width": px or None, "height": px or None, "fps": float or None}``.
    """
    return parse_stream_info(input_report(path))


def parse_stream_info(text: str) -> dict:
    """The facts ``probe_media`` returns, read from ffmpeg's input report (its stderr at log
    level info: ``Duration: ...`` and one ``Stream #...`` line per stream)."""
    info: dict = {"duration": None, "has_audio": False, "has_video": False,
                  "audio_rate": None, "width": None, "height": None, "fps": None}
    m = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    if m:
        h, mi, s = m.groups()
        info["duration"] = int(h) * 3600 + int(mi) * 60 + float(s)
    for line in text.splitlines():
        if "Stream #" not in line:
            continue
        if "Audio:" in line and not info["has_audio"]:
            info["has_audio"] = True
            m = re.search(r"(\d+) Hz", line)
            if m:
                info["audio_rate"] = int(m.group(1))
        elif "Video:" in line and not info["has_video"]:
            info["has_video"] = True
            m = re.search(r", (\d{2,5})x(\d{2,5})", line)
            if m:
                info["width"], info["height"] = int(m.group(1)), int(m.group(2))
            m = re.search(r"([\d.]+) fps", line)
            if m:
                info["fps"] = float(m.group(1))
    if not (info["has_audio"] or info["has_video"]):
        info["error"] = text.strip().splitlines()[-1] if text.strip() else "unreadable"
    return info
