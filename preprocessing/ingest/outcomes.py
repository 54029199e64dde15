"""Every download outcome named: the classes of failure and how a yt-dlp/network error maps to one.

- ``Unavailable(reason)`` — 404/403/410, private, removed, age/geo restricted, bot check: final,
  never retried;
- ``Retryable(reason, retry_after)`` — 429, 5xx, connection errors, timeouts: retried with
  exponential backoff + jitter (honouring ``Retry-After``), then recorded as ``failed``;
- ``SourceInvalid(reason)`` — the media itself is broken: recorded as ``invalid``.

``classify_error(exc)`` does the mapping; ``redact(text)`` removes credentials from URLs in any text
that is stored or logged.
"""

from __future__ import annotations

import re
import time


class DownloadProblem(Exception):
    """Base of classified download outcomes; ``reason`` is a short stable token + detail."""

    status = "failed"

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class Unavailable(DownloadProblem):
    status = "unavailable"


class Retryable(DownloadProblem):
    status = "failed"

    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None):
        super().__init__(reason, detail)
        self.retry_after = retry_after


class SourceInvalid(DownloadProblem):
    status = "invalid"


# Message patterns (YouTube and the generic extractor) → unavailable reasons.
# A bot-check page ("Sign in to confirm you're not a bot").
BOT_CHECK_PATTERN = r"confirm you.?re not a bot"
_UNAVAILABLE_PATTERNS = [
    (BOT_CHECK_PATTERN, "bot_check"),
    (r"private video", "private"),
    (r"confirm your age|age[- ]restricted|inappropriate for some users", "age_restricted"),
    (r"available in your country|geo.?restrict|blocked it in your country|not available in "
     r"your (?:region|location)", "geo_restricted"),
    (r"has been removed|account .* (?:terminated|closed)|copyright claim|violating youtube",
     "removed"),
    (r"members-only|join this channel", "members_only"),
    (r"video unavailable|this video is (?:no longer )?(?:un)?available|does not exist",
     "removed"),
    (r"unsupported url", "unsupported_url"),
]
_RETRYABLE_PATTERNS = [
    (r"timed? ?out", "timeout"),
    (r"connection (?:refused|reset|aborted)|remote end closed|temporary failure in name"
     r"|network is unreachable|broken pipe|incomplete ?read", "connection_error"),
    (r"too many requests", "http_429"),
]


def _retry_after_seconds(response) -> float | None:
    try:
        value = response.headers.get("Retry-After") if response is not None else None
    except Exception:  # pragma: no cover - odd response objects
        return None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def response_text(response, limit: int = 4096) -> str:
    try:
        return response.read(limit).decode("utf-8", "replace") if response is not None else ""
    except Exception:
        return ""


def _chain(exc: BaseException):
    """The exception, its ``exc_info`` cause (yt-dlp DownloadError) and ``__cause__`` chain."""
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        info = getattr(e, "exc_info", None)
        if isinstance(info, tuple) and len(info) > 1 and isinstance(info[1], BaseException):
            todo.append(info[1])
        todo.append(e.__cause__)
        todo.append(e.__context__)
        if getattr(e, "orig_msg", None) is None and getattr(e, "cause", None) is not None:
            if isinstance(e.cause, BaseException):
                todo.append(e.cause)


def classify_error(exc: BaseException) -> DownloadProblem:
    """Map a yt-dlp/network exception to Unavailable / Retryable / SourceInvalid."""
    from yt_dlp.networking.exceptions import HTTPError, TransportError

    if isinstance(exc, DownloadProblem):
        return exc
    text = " | ".join(str(e) for e in _chain(exc))
    detail = short_detail(str(exc))
    for e in _chain(exc):
        if isinstance(e, HTTPError):
            status = int(e.status)
            if status in (404, 410):
                return Unavailable(f"http_{status}", detail)
            if status == 403:
                body = response_text(getattr(e, "response", None))
                if re.search(BOT_CHECK_PATTERN, body, re.I):
                    return Unavailable("bot_check", detail)
                return Unavailable("http_403", detail)
            if status == 401:
                return Unavailable("http_401", detail)
            if status == 429:
                return Retryable("http_429", detail, _retry_after_seconds(e.response))
            if 500 <= status < 600:
                return Retryable(f"http_{status}", detail, _retry_after_seconds(e.response))
            if status == 408:
                return Retryable("timeout", detail)
            return Unavailable(f"http_{status}", detail)
    for pattern, reason in _UNAVAILABLE_PATTERNS:
        if re.search(pattern, text, re.I):
            return Unavailable(reason, detail)
    for pattern, reason in _RETRYABLE_PATTERNS:
        if re.search(pattern, text, re.I):
            return Retryable(reason, detail)
    for e in _chain(exc):
        if isinstance(e, (TimeoutError,)):
            return Retryable("timeout", detail)
        if isinstance(e, (TransportError, ConnectionError)):
            return Retryable("connection_error", detail)
    if re.search(r"ffmpeg exited with code|invalid data found|moov atom not found", text, re.I):
        return SourceInvalid("unreadable_source", detail)
    return Retryable("download_error", detail)


_SECRET_RE = re.compile(r"(://)[^/@\s:]+(:[^/@\s]*)?@")


def redact(text: str) -> str:
    """Remove credentials from URLs inside ``text`` (``scheme://user:pass@host`` →
    ``scheme://***@host``)."""
    return _SECRET_RE.sub(r"\1***@", str(text))


def short_detail(text: str, limit: int = 300) -> str:
    text = redact(re.sub(r"\x1b\[[0-9;]*m", "", text)).replace("\n", " ").strip()
    text = re.sub(r"^ERROR: ", "", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
