"""Manifest readers, one per format, chosen by name from ``MANIFEST_READERS``.

Every reader turns a manifest file (local path or fsspec URL) into ``ManifestEntry`` rows:

- ``vggsound``: CSV, no header, ``youtube_id,start_seconds,label,split``; labels containing
  commas are quoted. The clip is ``[start, start + clip_seconds]``.
- ``audioset``: AudioSet segment CSV: ``#`` header lines, then
  ``YTID, start_seconds, end_seconds, positive_labels`` (a quoted comma-separated list of MIDs).
  MIDs become display names when ``labels_csv`` (``class_labels_indices.csv``:
  ``index,mid,display_name``) or ``ontology`` (``ontology.json``) is given. ``split`` option
  (default ``"train"``) since AudioSet splits are separate files.
- ``music``: MUSIC JSON ``{"videos": {instrument: [youtube_id, ...]}}`` (solo and duet files;
  duet keys like ``"flute violin"`` give two labels). One clip per video from ``start_seconds``
  (default 0); the split is drawn deterministically from the video id (``val_fraction``,
  ``test_fraction``), since MUSIC ships no split.
- ``generic``: CSV with a header, or Parquet, with columns ``url`` (or ``path``: a local file or
  any URL), ``start``, ``end`` (optional: ``start + clip_seconds``), ``labels`` (``;``- or
  ``,``-separated, or a list in Parquet), ``split`` (optional, default ``train``), ``video_id``
  (optional: the file name's stem).

A malformed row raises ``ManifestError`` naming the file and line. With ``skip_malformed=True`` it
is skipped instead and recorded in the returned list's ``.skipped`` as ``(line, reason)``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
from typing import Callable, Iterable

from ial.registry import Registry
from ial.storage import open_url

DEFAULT_CLIP_SECONDS = 10.0


class ManifestError(ValueError):
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


def clip_id(video_id: str, start: float) -> str:
    """The stable clip id ``{video_id}_{start_ms}``."""
    return f"{video_id}_{int(round(start * 1000))}"


class Manifest(list):
    """A list of ManifestEntry with ``.skipped``: ``[(line, reason), ...]`` of malformed rows
    skipped under ``skip_malformed=True``, and ``.source`` (the file)."""

    def __init__(self, entries: Iterable[ManifestEntry] = (), source: str = "",
                 skipped: list[tuple] | None = None):
        super().__init__(entries)
        self.source = source
        self.skipped = skipped or []


MANIFEST_READERS: Registry[Callable[..., Manifest]] = Registry("manifest format")


def read_manifest(path: str, format: str = "vggsound", **opts) -> Manifest:
    """Read ``path`` with the reader registered as ``format`` (see module doc for options)."""
    reader = MANIFEST_READERS.get(format)
    return reader(str(path), **opts)


# ---------------------------------------------------------------------------------- helpers

def _read_text(path: str) -> str:
    try:
        with open_url(path, "rb") as f:
            return f.read().decode("utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(path, None, "manifest file not found") from None


def _seconds(value: str, what: str) -> float:
    try:
        x = float(str(value).strip())
    except ValueError:
        raise ValueError(f"{what} is not a number: {value!r}") from None
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return x


_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _video_id(value: str) -> str:
    vid = str(value).strip()
    if not _ID_RE.match(vid):
        raise ValueError(f"bad video id {value!r}")
    return vid


class _Collector:
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
                raise ManifestError(self.manifest.source, line, reason) from None
            self.manifest.skipped.append((line, reason))
            return
        if entry is not None:
            self.manifest.append(entry)


# ---------------------------------------------------------------------------------- readers

@MANIFEST_READERS.register("vggsound")
def read_vggsound(path: str, clip_seconds: float = DEFAULT_CLIP_SECONDS,
                  skip_malformed: bool = False, **_: object) -> Manifest:
    """VGGSound CSV: no header, ``youtube_id,start_seconds,label,split``."""
    out = _Collector(path, skip_malformed)
    for lineno, row in _csv_rows(_read_text(path)):
        def build(row=row):
            if isinstance(row, csv.Error):
                raise ValueError(f"CSV syntax: {row}")
            if len(row) != 4:
                raise ValueError(f"expected 4 fields (youtube_id,start_seconds,label,split), "
                                 f"got {len(row)}")
            vid, start, label, split = (x.strip() for x in row)
            s = _seconds(start, "start_seconds")
            if not label:
                raise ValueError("empty label")
            if not split:
                raise ValueError("empty split")
            return ManifestEntry(_video_id(vid), s, s + clip_seconds, label, (label,), split,
                                 None, lineno)
        out.row(lineno, build)
    return out.manifest


def _csv_rows(text: str, skipinitialspace: bool = False, comments: bool = False):
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


def _load_label_names(labels_csv: str | None, ontology: str | None) -> dict[str, str]:
    names: dict[str, str] = {}
    if labels_csv:
        text = _read_text(labels_csv)
        for lineno, row in _csv_rows(text):
            if row is None or isinstance(row, csv.Error):
                continue
            if lineno == 1 and row[0].strip() == "index":
                continue
            if len(row) < 3:
                raise ManifestError(labels_csv, lineno, "expected index,mid,display_name")
            names[row[1].strip()] = row[2].strip()
    if ontology:
        try:
            items = json.loads(_read_text(ontology))
        except json.JSONDecodeError as exc:
            raise ManifestError(ontology, exc.lineno, f"invalid JSON: {exc.msg}") from None
        for item in items:
            names.setdefault(item["id"], item["name"])
    return names


@MANIFEST_READERS.register("audioset")
def read_audioset(path: str, labels_csv: str | None = None, ontology: str | None = None,
                  split: str = "train", skip_malformed: bool = False,
                  clip_seconds: float | None = None, **_: object) -> Manifest:
    """AudioSet segments CSV (``# ...`` header lines; ``YTID, start, end, "mid1,mid2"``).

    ``clip_seconds`` (optional) caps the clip at ``start + clip_seconds``."""
    names = _load_label_names(labels_csv, ontology)
    out = _Collector(path, skip_malformed)
    for lineno, row in _csv_rows(_read_text(path), skipinitialspace=True, comments=True):
        if row is None:
            continue

        def build(row=row):
            if isinstance(row, csv.Error):
                raise ValueError(f"CSV syntax: {row}")
            if len(row) != 4:
                raise ValueError(f"expected 4 fields (YTID, start_seconds, end_seconds, "
                                 f"positive_labels), got {len(row)}")
            vid, start, end, mids = (x.strip() for x in row)
            s, e = _seconds(start, "start_seconds"), _seconds(end, "end_seconds")
            if e <= s:
                raise ValueError(f"end_seconds {e} <= start_seconds {s}")
            if clip_seconds:
                e = min(e, s + clip_seconds)
            mid_list = [m.strip() for m in mids.split(",") if m.strip()]
            if not mid_list:
                raise ValueError("no positive_labels")
            labels = tuple(names.get(m, m) for m in mid_list)
            return ManifestEntry(_video_id(vid), s, e, labels[0], labels, split, None, lineno)
        out.row(lineno, build)
    return out.manifest


def _hash_fraction(text: str) -> float:
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


@MANIFEST_READERS.register("music")
def read_music(path: str, clip_seconds: float = DEFAULT_CLIP_SECONDS, start_seconds: float = 0.0,
               val_fraction: float = 0.1, test_fraction: float = 0.1,
               skip_malformed: bool = False, **_: object) -> Manifest:
    """MUSIC JSON ``{"videos": {instrument: [youtube_id, ...]}}`` (solo or duet keys)."""
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise ManifestError(path, exc.lineno, f"invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
        raise ManifestError(path, None, 'expected {"videos": {instrument: [youtube_id, ...]}}')
    out = _Collector(path, skip_malformed)
    for key, ids in data["videos"].items():
        if not isinstance(ids, list):
            out.row(f"videos[{key!r}]", lambda: (_ for _ in ()).throw(
                ValueError("expected a list of youtube ids")))
            continue
        labels = tuple(key.split())
        for i, vid in enumerate(ids):
            where = f"videos[{key!r}][{i}]"

            def build(vid=vid):
                if not isinstance(vid, str):
                    raise ValueError(f"bad video id {vid!r}")
                v = _video_id(vid)
                h = _hash_fraction(v)
                split = "test" if h < test_fraction else (
                    "val" if h < test_fraction + val_fraction else "train")
                return ManifestEntry(v, start_seconds, start_seconds + clip_seconds, key,
                                     labels, split, None, where)
            out.row(where, build)
    return out.manifest


def _stem_id(url: str) -> str:
    stem = os.path.splitext(os.path.basename(url.split("?", 1)[0].rstrip("/")))[0]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-")
    return stem[:64] or hashlib.sha1(url.encode()).hexdigest()[:11]


def _split_labels(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(x).strip() for x in value if str(x).strip())
    sep = ";" if ";" in str(value) else ","
    return tuple(x.strip() for x in str(value).split(sep) if x.strip())


@MANIFEST_READERS.register("generic")
def read_generic(path: str, clip_seconds: float = DEFAULT_CLIP_SECONDS,
                 skip_malformed: bool = False, **_: object) -> Manifest:
    """CSV (with header) or Parquet of ``url|path, start, end, labels, split[, video_id]``."""
    out = _Collector(path, skip_malformed)
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        with open_url(path) as f:
            records = pq.read_table(f).to_pylist()
        rows = [(i + 1, r) for i, r in enumerate(records)]
        where_prefix = "row "
    else:
        text = _read_text(path)
        reader = csv.DictReader(io.StringIO(text), skipinitialspace=True)
        if not reader.fieldnames:
            raise ManifestError(path, 1, "empty file (a header line is required)")
        rows = []
        for r in reader:
            if all(v in (None, "") for v in r.values()):
                continue
            rows.append((reader.line_num, r))
        where_prefix = ""
    for lineno, r in rows:
        def build(r=r):
            src = r.get("url") or r.get("path")
            if not src or not str(src).strip():
                raise ValueError("missing url/path")
            src = str(src).strip()
            start = _seconds(r.get("start") if r.get("start") not in (None, "") else 0, "start")
            end_raw = r.get("end")
            end = start + clip_seconds if end_raw in (None, "") else _seconds(end_raw, "end")
            if end <= start:
                raise ValueError(f"end {end} <= start {start}")
            labels = _split_labels(r.get("labels", r.get("label")))
            if not labels:
                raise ValueError("missing labels")
            vid = r.get("video_id")
            vid = _video_id(vid) if vid not in (None, "") else _stem_id(src)
            split = str(r.get("split") or "train").strip()
            return ManifestEntry(vid, start, end, labels[0], labels, split, src, lineno)
        out.row(f"{where_prefix}{lineno}" if where_prefix else lineno, build)
    return out.manifest
