"""What every manifest reader gives: ``ManifestEntry`` rows in a ``Manifest``, the
``MANIFEST_READERS`` registry, and the helpers the readers share (reading the file, numbers, video
ids, collecting rows with their line numbers). The formats are in ``formats``."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import inspect
import io
import math
import re
import zlib
from typing import Callable, Iterable

from ial.errors import UserError
from ial.parquet_reading import read_parquet
from ial.registry import Registry
from ial.storage import open_url
from preprocessing.clip_index import clip_id

DEFAULT_CLIP_SECONDS = 10.0


class ManifestError(UserError, ValueError):
    """A manifest row (or the whole file) is malformed; the message names the file and line."""

    def __init__(self, source: str, line: int | str | None, message: str):
        self.source = source
        self.line = line
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    """One requested clip. ``url`` is None for hosted videos (the URL template gives it)."""

    video_id: str
    start: float  # s into the source video
    end: float  # s
    label: str  # primary label (display name)
    labels: tuple[str, ...]
    split: str
    url: str | None = None  # explicit source (generic manifests): URL or local path
    line: int | str | None = None  # where in the manifest (for error messages)

    @property
    def clip_id(self) -> str:
        return clip_id(self.video_id, self.start)


class Manifest(list):
    """A list of ManifestEntry with ``.skipped``: ``[(line, reason), ...]`` of malformed rows
    skipped under ``skip_malformed=True``, and ``.source`` (the file)."""

    def __init__(self, entries: Iterable[ManifestEntry] = (), source: str = "",
                 skipped: list[tuple] | None = None):
        super().__init__(entries)
        self.source = source
        self.skipped = skipped or []
        self.unknown_labels: dict[str, int] = {}  # label → rows (kept as given, not resolved)


MANIFEST_READERS: Registry[Callable[..., Manifest]] = Registry("manifest format")


def read_manifest(path: str, format: str = "vggsound", **opts) -> Manifest:
    """Read ``path`` with the reader registered as ``format`` (see module doc for options)."""
    reader = MANIFEST_READERS.get(format)
    return reader(str(path), **opts)


def reader_options(format: str) -> list[str]:
    """The ``manifest_options`` the reader of ``format`` accepts (its keyword parameters)."""
    params = inspect.signature(MANIFEST_READERS.get(format)).parameters
    return [n for n, p in params.items() if n not in ("path", "skip_malformed")
            and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]


# ---------------------------------------------------------------------------------- helpers

def read_manifest_text(path: str) -> str:
    try:
        with open_url(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ManifestError(path, None, "manifest file not found") from None
    except IsADirectoryError:
        raise ManifestError(path, None, "is a directory, not a manifest file") from None
    except PermissionError:
        raise ManifestError(path, None, "permission denied reading the manifest") from None
    if data[:2] == b"\x1f\x8b":  # a gzip-compressed manifest (e.g. vggsound.csv.gz)
        data = _gunzip(path, data)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ManifestError(path, line, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                                        f"{exc.start}); save the manifest as UTF-8") from None


def _gunzip(path: str, data: bytes) -> bytes:
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as exc:
        raise ManifestError(path, None, f"a gzip file that does not decompress ({exc}); "
                                        "download it again") from None


def read_manifest_records(path: str) -> list[dict]:
    """The rows of a Parquet manifest as dicts; a missing or unreadable file is a ManifestError
    naming it."""
    import pyarrow as pa

    try:
        return read_parquet(path).to_pylist()
    except FileNotFoundError:
        raise ManifestError(path, None, "manifest file not found") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(path, None, f"not a readable Parquet file ({exc})") from None


def parse_seconds(value: str, what: str) -> float:
    try:
        x = float(str(value).strip())
    except ValueError:
        raise ValueError(f"{what} is not a number: {value!r}") from None
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return x


_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def parse_video_id(value: str) -> str:
    vid = str(value).strip()
    if not _ID_RE.match(vid):
        raise ValueError(f"bad video id {value!r}")
    return vid


class RowCollector:
    """Collects entries; turns row errors into ManifestError or skips (``skip_malformed``)."""

    def __init__(self, source: str, skip_malformed: bool):
        self.manifest = Manifest(source=source)
        self.skip = skip_malformed

    def row(self, line, build: Callable[[], ManifestEntry | None]) -> None:
        try:
            entry = build()
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            reason = str(exc.args[0]) if exc.args else type(exc).__name__
            if isinstance(exc, KeyError):
                reason = f"missing field {reason!r}"
            if not self.skip:
                raise ManifestError(self.manifest.source, line, f"{reason} (the ingest config's "
                                    "skip_malformed: true skips and counts such rows)") from None
            self.manifest.skipped.append((line, reason))
            return
        if entry is not None:
            self.manifest.append(entry)


def csv_fields(row, names: str) -> list[str]:
    """The stripped fields of one CSV record (from ``csv_rows``), which must be exactly the
    comma-separated ``names``; a ValueError (the row's reason) otherwise."""
    if isinstance(row, csv.Error):
        raise ValueError(f"CSV syntax: {row}")
    expected = len(names.split(","))
    if len(row) != expected:
        raise ValueError(f"expected {expected} fields ({names}), got {len(row)}")
    return [x.strip() for x in row]


def csv_rows(text: str, skipinitialspace: bool = False, comments: bool = False):
    """``(line_number, fields)`` for each non-blank CSV record (line of the record's start).

    ``fields`` is a ``csv.Error`` for a record with broken quoting, and None for a ``#`` comment
    line when ``comments`` is set."""
    lines = text.splitlines(keepends=True)
    reader = csv.reader(io.StringIO(text), skipinitialspace=skipinitialspace)
    prev_line = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, exc  # malformed quoting
            continue
        start_line = prev_line + 1
        prev_line = reader.line_num
        if not row or all(not x.strip() for x in row):
            continue
        if comments and start_line <= len(lines) and lines[start_line - 1].lstrip().startswith("#"):
            yield start_line, None  # comment
            continue
        yield start_line, row
