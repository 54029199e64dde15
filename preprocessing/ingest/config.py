"""``IngestConfig`` (``configs/ingest/*.yaml``) and ``redacted_config``: the copy of it that is
safe to save or log (passwords, tokens, headers, credentials in URLs removed)."""

from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse
from typing import Any

from ial.config import ConfigError, from_dict, to_dict
from ial.signal import SILENCE_DBFS
from preprocessing.ingest.download import DEFAULT_FORMAT, DEFAULT_FORMAT_SORT, YOUTUBE_URL_TEMPLATE
from preprocessing.ingest.manifests import MANIFEST_READERS, reader_options
from preprocessing.ingest.outcomes import redact
from preprocessing.ingest.slicing import MIN_AUDIO_RATE

# The proxy schemes yt-dlp's request handlers take ("socks" is its alias of socks4); a proxy
# without a scheme is http, and "" means no proxy.
PROXY_SCHEMES = ("http", "https", "socks", "socks4", "socks4a", "socks5", "socks5h")


@dataclasses.dataclass
class IngestConfig:
    """Configuration of the ingest stage (``configs/ingest/*.yaml``)."""

    manifest: str = ""  # path/URL of the manifest file
    manifest_format: str = "vggsound"  # vggsound | audioset | music | generic | ave
    # Options of the format's reader (e.g. audioset labels_csv, ave split); other keys are refused.
    manifest_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    dataset: str | None = None  # default: the manifest format's name
    root: str = "./data"  # storage root (local dir or s3://bucket/prefix)
    url_template: str = YOUTUBE_URL_TEMPLATE  # where {video_id} is fetched from
    clip_seconds: float = 10.0  # s per clip (VGGSound/MUSIC; AudioSet: capped at this)
    fps: float = 8.0  # frames per second of the clips
    # px: lowest format with >= this height; clips scaled so the short side = this
    min_height: int = 224
    audio_rate: int = 22050  # Hz of the clips' audio (>= 11025)
    silence_db: float = SILENCE_DBFS  # dBFS: a clip whose peak is at/below it is flagged silent
    format: str = DEFAULT_FORMAT  # yt-dlp format selector ({min_height} filled in)
    format_sort: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_FORMAT_SORT))
    batch_size: int = 64  # clips per batch (one index part + one stats file each)
    concurrency: int = 2  # clips in flight per batch
    retries: int = 3  # retries of retryable failures (429, 5xx, connection, timeout)
    backoff: float = 2.0  # s: first retry delay (doubles, jittered; Retry-After wins)
    backoff_max: float = 60.0  # s
    rate_limit_per_minute: float = 0.0  # global download attempts per minute (0 = unlimited)
    socket_timeout: float = 30.0  # s
    skip_malformed: bool = False  # skip (and count) malformed manifest rows instead of failing
    retry_failed: bool = False  # retry clips recorded as failed (retryable) by earlier runs
    # Passed to yt-dlp (cookiefile: read from a private copy per download, never written back).
    ytdlp_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    dask_address: str | None = None  # Dask scheduler (None: LocalCluster in the flow)
    dask_workers: int = 1  # LocalCluster workers (flow)
    dask_threads: int = 2  # threads per LocalCluster worker = batches at once per worker
    video_preset: str = "veryfast"  # libx264 preset of the clips
    video_crf: int = 23

    def validate(self) -> None:
        if self.manifest_format not in MANIFEST_READERS:
            raise ConfigError("manifest_format", f"unknown format {self.manifest_format!r}; "
                              f"known: {', '.join(MANIFEST_READERS.names())}")
        if self.audio_rate < MIN_AUDIO_RATE:
            raise ConfigError("audio_rate", f"must be >= {MIN_AUDIO_RATE} Hz")
        for name in ("clip_seconds", "fps"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be > 0")
        for name in ("batch_size", "concurrency", "dask_workers", "dask_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be >= 1")
        for name in ("retries", "min_height"):
            if getattr(self, name) < 0:
                raise ConfigError(name, "must be >= 0")
        if self.rate_limit_per_minute < 0:
            raise ConfigError("rate_limit_per_minute", "must be >= 0 (0 = unlimited)")
        if "{video_id}" not in self.url_template:
            raise ConfigError("url_template", "must contain {video_id}")
        if self.dataset is not None and not re.match(r"^[A-Za-z0-9_.-]+$", self.dataset):
            raise ConfigError("dataset", f"use letters, digits, '_', '-', '.': {self.dataset!r}")
        allowed = reader_options(self.manifest_format)
        for key in self.manifest_options:
            if key not in allowed:
                raise ConfigError(f"manifest_options.{key}", f"the {self.manifest_format} reader "
                                  f"has no option {key!r}; it takes: {', '.join(allowed)}")
        cookies = self.ytdlp_options.get("cookiefile")
        if cookies and "://" not in str(cookies) and not os.path.isfile(str(cookies)):
            raise ConfigError("ytdlp_options.cookiefile", f"cookie file not found: {cookies}")
        proxy = self.ytdlp_options.get("proxy")
        if proxy and not _is_proxy_url(str(proxy)):  # else every clip fails as download_error
            raise ConfigError("ytdlp_options.proxy", f"{redact(str(proxy))!r} is not a proxy URL "
                              f"(<scheme>://[user:password@]host:port, the scheme one of "
                              f"{', '.join(PROXY_SCHEMES)})")

    @property
    def dataset_name(self) -> str:
        return self.dataset or self.manifest_format


def _is_proxy_url(proxy: str) -> bool:
    """Whether yt-dlp can use ``proxy``: a known scheme (none = http), a host, a number port."""
    if re.search(r"\s", proxy):
        return False
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy.lstrip("/"))
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number in 0-65535)
    except ValueError:
        return False
    return parts.scheme.lower() in PROXY_SCHEMES and bool(parts.hostname)


_SECRET_KEY = re.compile(r"pass|user|token|secret|key|auth|header|cookie(?!file)", re.I)


def _redact_value(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redact_value(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(key, v) for v in value]
    if _SECRET_KEY.search(str(key)) and value not in (None, "", False):
        return "***"
    if isinstance(value, str):
        return redact(value)
    return value


def redacted_config(cfg: IngestConfig) -> IngestConfig:
    """A copy of ``cfg`` safe to save/log: passwords, usernames, headers, tokens → ``***``,
    credentials inside URLs (proxy, template) removed. A cookie file's path is kept, never its
    content."""
    data = to_dict(cfg)
    data["ytdlp_options"] = _redact_value("ytdlp_options", data.get("ytdlp_options") or {})
    data["url_template"] = redact(data["url_template"])
    data["manifest"] = redact(data["manifest"])
    data["root"] = redact(data["root"])
    return from_dict(IngestConfig, data)
