"""Download exactly one section of a video with yt-dlp's Python API, and name every outcome.

``download_section(url, start, end, out_dir, name, options)`` fetches only ``[start, end]``
(yt-dlp ``download_ranges`` + ``force_keyframes_at_cuts``: ffmpeg seeks over HTTP Range
requests and re-encodes at the cut points so the section starts exactly at ``start``), in the
lowest video format that still has ``min_height`` px, plus audio; ``end=None`` fetches the whole
video (``ial separate`` of a URL, ``video_name`` names its file).

Every failure is raised as one of the outcomes of ``preprocessing.ingest.outcomes``
(``Unavailable``: final; ``Retryable``: retried by ``download_with_retries`` with exponential
backoff + jitter, honouring ``Retry-After``; ``SourceInvalid``: the media is broken).

Note (ffmpeg location): yt-dlp picks its section downloader with ``FFmpegFD.available()``,
which ignores the ``ffmpeg_location`` option and only looks on PATH; the Python API's other
hook is the ``FFmpegPostProcessor._ffmpeg_location`` context variable (what the yt-dlp CLI
sets). We set both, per call, so the imageio-ffmpeg binary works without a system ffmpeg.

Note (threads): yt-dlp fills its process-wide plugin and extractor tables in the first
``YoutubeDL()`` of a process, and that is not thread-safe (``load_ytdlp_extractors``).
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import threading
import time
import urllib.parse
from typing import Any, Callable

from ial.media import ffmpeg_binary, input_report
from preprocessing.ingest.outcomes import (BOT_CHECK_PATTERN, DownloadProblem, Retryable,
                                           SourceInvalid, Unavailable, classify_error,
                                           response_text, short_detail)

YOUTUBE_URL_TEMPLATE = "https://www.youtube.com/watch?v={video_id}"
# Lowest video format with >= min_height px plus (any) audio; fall back to a single file.
DEFAULT_FORMAT = "bv*[height>={min_height}]+ba/b[height>={min_height}]/bv*+ba/b"
DEFAULT_FORMAT_SORT = ("+res", "+fps", "+br")
# Extractors yt-dlp loads (loading all ~1800 costs ~0.15 s of CPU per download).
DEFAULT_EXTRACTORS = ("youtube", "generic")
_YTDLP_TABLES_LOCK = threading.Lock()
# When no clip format is asked for, the section is re-encoded near-losslessly at the cuts.
SECTION_ENCODE_ARGS = ("-c:v", "libx264", "-preset", "ultrafast", "-crf", "16",
                       "-c:a", "aac", "-b:a", "192k")


@dataclasses.dataclass
class DownloadResult:
    path: str  # local file of the section
    attempts: int
    bytes: int
    source_duration: float | None = None  # s, of the whole video when the site says it
    # s: where the section starts in ``path`` (0: the file is the section; ``start``: the whole
    # video was downloaded because its server ignores Range requests)
    offset: float = 0.0


def ytdlp_params(out_dir: str, name: str, start: float, end: float | None, min_height: int = 224,
                 format: str = DEFAULT_FORMAT, format_sort: tuple[str, ...] = DEFAULT_FORMAT_SORT,
                 socket_timeout: float = 30.0, options: dict | None = None,
                 output_args: list[str] | None = None) -> dict:
    """The yt-dlp parameters for one exact-section download (``options`` passed through and
    win, e.g. ``cookiefile``, ``proxy``, ``sleep_interval``, ``ratelimit``,
    ``allowed_extractors``). ``output_args``: ffmpeg output options of the section (the clip
    format, ``slicing.clip_encode_args``); default: a near-lossless re-encode. ``end=None``:
    the whole video, as the site serves it (no section, no re-encode)."""
    from yt_dlp.utils import download_range_func

    params: dict[str, Any] = {
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "noplaylist": True,
        "outtmpl": {"default": os.path.join(out_dir, f"{name}.%(ext)s")},
        "paths": {"home": out_dir, "temp": out_dir},
        "format": format.format(min_height=min_height),
        "format_sort": list(format_sort),
        "merge_output_format": "mp4",
        "force_keyframes_at_cuts": end is not None,
        "ffmpeg_location": ffmpeg_binary(),
        # ffmpeg reads the media itself: give its network reads the same timeout (µs)
        "external_downloader_args": {"ffmpeg_i": ["-rw_timeout", str(int(socket_timeout * 1e6))],
                                     "ffmpeg_o": list(output_args or SECTION_ENCODE_ARGS)},
        "allowed_extractors": list(DEFAULT_EXTRACTORS),
        "socket_timeout": socket_timeout,
        # Retries are ours (classified, with backoff and a global rate limit).
        "retries": 0,
        "extractor_retries": 0,
        "fragment_retries": 0,
        "file_access_retries": 0,
        "overwrites": True,
        "cachedir": False,
        "logger": _QuietLogger(),
    }
    if end is not None:
        params["download_ranges"] = download_range_func(None, [(float(start), float(end))])
    params.update(options or {})
    return params


def video_name(url: str) -> str:
    """A file name for the video at ``url``: a YouTube id (``watch?v=<id>``, ``youtu.be/<id>``,
    ``/shorts/<id>``), else the last part of the URL's path without its extension, else
    ``video``; only letters, digits, ``-``, ``_`` and ``.``."""
    parts = urllib.parse.urlsplit(url)
    name = urllib.parse.parse_qs(parts.query).get("v", [""])[0]
    if not name:
        name = os.path.splitext(urllib.parse.unquote(parts.path).rstrip("/").rsplit("/", 1)[-1])[0]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "video"


class _QuietLogger:
    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        pass

    def error(self, msg: str) -> None:
        pass


def load_ytdlp_extractors() -> None:
    """Fill yt-dlp's process-wide plugin and extractor tables once, one thread at a time.

    ``YoutubeDL()`` fills them itself the first time, in two steps no lock guards: loading the
    plugins *replaces* the extractor table with a merged copy, importing the extractors *fills*
    whichever table object is current. Two downloads starting together in a fresh process (a
    Dask worker's threads) can interleave so that one thread's copy, taken while the table was
    still empty or half filled, replaces the one the other thread filled: every later download
    in that process then fails with "No suitable extractor found" (seen in CI: all clips of a
    flow run, even the 404). Loading plugins and then extractors here, under a lock, before any
    ``YoutubeDL()``, leaves nothing for its constructor to fill.
    """
    from yt_dlp.extractor import gen_extractor_classes
    from yt_dlp.globals import all_plugins_loaded
    from yt_dlp.plugins import load_all_plugins

    with _YTDLP_TABLES_LOCK:
        if not all_plugins_loaded.value:
            load_all_plugins()
        gen_extractor_classes()


def download_section(url: str, start: float, end: float | None, out_dir: str, name: str,
                     min_height: int = 224, format: str = DEFAULT_FORMAT,
                     format_sort: tuple[str, ...] = DEFAULT_FORMAT_SORT,
                     socket_timeout: float = 30.0, options: dict | None = None,
                     output_args: list[str] | None = None,
                     shorter_ok: bool = False) -> DownloadResult:
    """Download ``[start, end]`` s of ``url`` into ``out_dir/<name>.<ext>`` (``end=None``: the
    whole video, ``start`` 0).

    Two steps, so each failure is named: extraction (page/metadata requests: HTTP status,
    bot check, private/removed ...), then the section download by ffmpeg. When ffmpeg fails,
    the selected media URL(s) are probed with ffmpeg (same headers/proxy) to tell a throttled or
    broken server (retryable) from unreadable media (invalid). A section past the end of a
    video whose duration the site gives is ``SourceInvalid("section_past_end")`` before any media
    is fetched, unless ``shorter_ok`` (then the file ends with the video). Raises a
    DownloadProblem subclass.

    A direct media link on a server that ignores ``Range`` requests (a plain HTTP server: ffmpeg
    cannot seek to an index at the end of the file) is downloaded whole instead; the result's
    ``offset`` then says where the section starts in it.
    """
    from yt_dlp import YoutubeDL
    from yt_dlp.postprocessor.ffmpeg import FFmpegPostProcessor

    params = ytdlp_params(out_dir, name, start, end, min_height, format, format_sort,
                          socket_timeout, options, output_args)
    if params.get("cookiefile"):
        params["cookiefile"] = private_cookie_copy(params["cookiefile"], out_dir)
    load_ytdlp_extractors()
    token = FFmpegPostProcessor._ffmpeg_location.set(params["ffmpeg_location"])
    try:
        with YoutubeDL(params) as ydl:
            try:
                info = ydl.extract_info(url, download=False)
            except Exception as exc:  # yt-dlp wraps everything in DownloadError
                problem = classify_error(exc)
                if problem.reason == "http_403":
                    problem = _diagnose_403(ydl, url, problem)
                raise problem from None
            total = info.get("duration")
            if total and end is not None and not shorter_ok and end > float(total) + 0.25:
                raise SourceInvalid("section_past_end", f"the video is {float(total):.2f} s; "
                                    f"the section ends at {end:.2f} s")
            whole = _direct_without_ranges(ydl, info)
            if whole:  # the HTTP downloader fetches the whole file; the clip is cut locally
                ydl.params.pop("download_ranges", None)
                ydl.params["force_keyframes_at_cuts"] = False
            try:
                info = ydl.process_ie_result(info, download=True)
            except Exception as exc:
                problem = classify_error(exc)
                if isinstance(problem, SourceInvalid):
                    problem = _diagnose_media(info, params, problem)
                raise problem from None
    finally:
        FFmpegPostProcessor._ffmpeg_location.reset(token)
    path = _downloaded_path(info, out_dir, name)
    if path is None:
        raise SourceInvalid("empty_section", "yt-dlp wrote no file for the section")
    total = info.get("duration")
    return DownloadResult(path, 1, os.path.getsize(path), float(total) if total else None,
                          offset=float(start) if whole else 0.0)


def _direct_without_ranges(ydl, info: dict) -> bool:
    """True for a direct media link (generic extractor) whose server ignores ``Range``: a
    ``Range: bytes=0-0`` request answered with the whole file (200) instead of 206."""
    from yt_dlp.networking import Request

    if info.get("extractor_key") != "Generic" or not info.get("direct"):
        return False
    media = info.get("url") or ""
    if not media.startswith(("http://", "https://")):
        return False
    headers = dict(info.get("http_headers") or {}, Range="bytes=0-0")
    try:
        with ydl.urlopen(Request(media, headers=headers)) as resp:
            return resp.status == 200
    except Exception:  # the download that follows names the problem
        return False


def private_cookie_copy(cookiefile: str, out_dir: str) -> str:
    """A private copy (mode 0600, in ``out_dir``) of the user's cookie file for one download.

    yt-dlp saves its cookie jar back to ``cookiefile`` when it closes, which would rewrite the
    user's file (and create it when missing); it gets this copy instead, removed with ``out_dir``.
    A missing file is ``Retryable("cookie_file_missing")`` (recorded as failed, retried later).
    """
    from ial.storage import open_url

    dst = os.path.join(out_dir, ".cookies.txt")
    try:
        with open_url(cookiefile, "rb") as src:
            data = src.read()
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise Retryable("cookie_file_missing", f"{cookiefile}: {type(exc).__name__}") from None
    fd = os.open(dst, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return dst


def _diagnose_403(ydl, url: str, problem: DownloadProblem) -> DownloadProblem:
    """A 403 page may be a bot check ("Sign in to confirm you're not a bot"): fetch it once
    more through yt-dlp (same cookies/proxy) and read its body."""
    from yt_dlp.networking.exceptions import HTTPError

    try:
        resp = ydl.urlopen(url)
        resp.close()
        return problem
    except HTTPError as exc:
        body = response_text(exc.response)
    except Exception:
        return problem
    if re.search(BOT_CHECK_PATTERN, body, re.I):
        return Unavailable("bot_check", problem.detail)
    return problem


_FFMPEG_HTTP = [
    (r"(?:HTTP error|Server returned) 429|Too Many Requests", Retryable, "http_429"),
    (r"Server returned 5XX|HTTP error 5\d\d", Retryable, "http_5xx"),
    (r"Server returned 404|HTTP error 404", Unavailable, "http_404"),
    (r"Server returned 403|HTTP error 403", Unavailable, "http_403"),
    (r"HTTP error 410", Unavailable, "http_410"),
    (r"Connection refused|Connection reset|timed out|End of file while", Retryable,
     "connection_error"),
    (r"Invalid data found|moov atom not found|could not find codec|no such stream",
     SourceInvalid, "unreadable_source"),
]


def _diagnose_media(info: dict, params: dict, problem: DownloadProblem) -> DownloadProblem:
    """ffmpeg failed on the section: probe each selected media URL to name why."""
    import subprocess

    formats = info.get("requested_formats") or [info]
    env = None
    if params.get("proxy"):
        env = dict(os.environ, http_proxy=params["proxy"], HTTP_PROXY=params["proxy"])
    for fmt in formats:
        media_url = fmt.get("url")
        if not media_url:
            continue
        try:
            text = input_report(media_url, headers=fmt.get("http_headers"), read_timeout=20,
                                timeout=60, env=env)
        except subprocess.TimeoutExpired:
            return Retryable("timeout", "probing the media timed out")
        for pattern, cls, reason in _FFMPEG_HTTP:
            if re.search(pattern, text, re.I):
                last_line = text.strip().splitlines()[-1]
                return cls(reason, problem.detail + " | " + short_detail(last_line))
    # The media reads fine now: the failure was transient.
    return Retryable("section_download_failed", problem.detail)


def _downloaded_path(info: dict | None, out_dir: str, name: str) -> str | None:
    for d in (info or {}).get("requested_downloads") or []:
        p = d.get("filepath")
        if p and os.path.isfile(p) and os.path.getsize(p) > 0:
            return p
    for f in sorted(os.listdir(out_dir)):
        p = os.path.join(out_dir, f)
        if f.startswith(name + ".") and not f.endswith((".part", ".ytdl")) and os.path.getsize(p):
            return p
    return None


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): ``Retry-After`` when the server gave
    one, else exponential ``base * 2**(attempt-1)`` capped at ``cap``, with full jitter in
    [50 %, 100 %]."""
    if retry_after is not None:
        return min(float(retry_after), cap) + (rng or random).uniform(0, 0.1 * base)
    delay = min(cap, base * (2 ** (attempt - 1)))
    return delay * (rng or random).uniform(0.5, 1.0)


def download_video(url: str, out_dir: str, seconds: float | None = None,
                   options: dict | None = None, retries: int = 3) -> str:
    """Download the video at ``url`` (its first ``seconds`` s, or all of a shorter one; default:
    all) into ``out_dir/<video_name(url)>.<ext>`` and return that path: ``ial separate`` of a
    URL. Retryable failures are retried ``retries`` times; raises the final DownloadProblem."""
    return download_with_retries(url, 0.0, seconds, out_dir, video_name(url), retries=retries,
                                 backoff=2.0, options=options, shorter_ok=True).path


def download_with_retries(url: str, start: float, end: float | None, out_dir: str, name: str,
                          retries: int = 3, backoff: float = 1.0, backoff_max: float = 60.0,
                          acquire: Callable[[], None] | None = None,
                          sleep: Callable[[float], None] = time.sleep,
                          **kwargs) -> DownloadResult:
    """``download_section`` with up to ``retries`` retries of Retryable outcomes.

    ``acquire()`` (the global rate limiter) is called before every attempt. Raises the final
    DownloadProblem; its ``attempts`` attribute holds the number of attempts made.
    """
    attempt = 0
    while True:
        attempt += 1
        if acquire is not None:
            acquire()
        try:
            result = download_section(url, start, end, out_dir, name, **kwargs)
            result.attempts = attempt
            return result
        except Retryable as exc:
            exc.attempts = attempt
            if attempt > retries:
                raise
            sleep(backoff_delay(attempt, backoff, backoff_max, exc.retry_after))
        except DownloadProblem as exc:
            exc.attempts = attempt
            raise
