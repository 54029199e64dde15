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
- ``ave``: AVE (Audio-Visual Event) annotations, one header line then
  ``Category&VideoID&Quality&StartTime&EndTime``; the split comes from the file name
  (``trainSet.txt``/``valSet.txt``/``testSet.txt``; ``Annotations.txt`` or another name: the
  ``split`` option, default ``train``). AVE's videos are 10-s clips, so an entry is ``[0, 10]`` of
  the video (``url_template`` points at where the AVE videos are served); ``event_segment: true``
  cuts the annotated ``[StartTime, EndTime]`` instead.

Each reader takes only the options its signature names (``MANIFEST_OPTIONS`` lists them);
``IngestConfig`` refuses any other ``manifest_options`` key. Labels a reader could not resolve
(an AudioSet MID missing from the given names) are counted in ``Manifest.unknown_labels``.

A malformed row raises ``ManifestError`` naming the file and line. With ``skip_malformed=True`` it
is skipped instead and recorded in the returned list's ``.skipped`` as ``(line, reason)``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re

from preprocessing.clip_index import hash_fraction
from preprocessing.ingest.manifests.base import (DEFAULT_CLIP_SECONDS, MANIFEST_READERS, Manifest,
                                                 ManifestEntry, ManifestError, RowCollector,
                                                 csv_fields, csv_rows, parse_seconds,
                                                 parse_video_id, read_manifest_records,
                                                 read_manifest_text)


@MANIFEST_READERS.register("vggsound")
def read_vggsound(path: str, clip_seconds: float = DEFAULT_CLIP_SECONDS,
                  skip_malformed: bool = False) -> Manifest:
    """VGGSound CSV: no header, ``youtube_id,start_seconds,label,split``."""
    out = RowCollector(path, skip_malformed)
    for lineno, row in csv_rows(read_manifest_text(path)):
        def build(row=row):
            vid, start, label, split = csv_fields(row, "youtube_id,start_seconds,label,split")
            s = parse_seconds(start, "start_seconds")
            if not label:
                raise ValueError("empty label")
            if not split:
                raise ValueError("empty split")
            return ManifestEntry(parse_video_id(vid), s, s + clip_seconds, label, (label,), split,
                                 None, lineno)
        out.row(lineno, build)
    return out.manifest


def _load_label_names(labels_csv: str | None, ontology: str | None) -> dict[str, str]:
    names: dict[str, str] = {}
    if labels_csv:
        text = read_manifest_text(labels_csv)
        for lineno, row in csv_rows(text):
            if row is None or isinstance(row, csv.Error):
                continue
            if lineno == 1 and row[0].strip() == "index":
                continue
            if len(row) < 3:
                raise ManifestError(labels_csv, lineno, "expected index,mid,display_name")
            names[row[1].strip()] = row[2].strip()
    if ontology:
        try:
            items = json.loads(read_manifest_text(ontology))
        except json.JSONDecodeError as exc:
            raise ManifestError(ontology, exc.lineno, f"invalid JSON: {exc.msg}") from None
        for item in items:
            names.setdefault(item["id"], item["name"])
    return names


@MANIFEST_READERS.register("audioset")
def read_audioset(path: str, labels_csv: str | None = None, ontology: str | None = None,
                  split: str = "train", skip_malformed: bool = False,
                  clip_seconds: float | None = None) -> Manifest:
    """AudioSet segments CSV (``# ...`` header lines; ``YTID, start, end, "mid1,mid2"``).

    ``clip_seconds`` (optional) caps the clip at ``start + clip_seconds``."""
    names = _load_label_names(labels_csv, ontology)
    out = RowCollector(path, skip_malformed)
    unknown: dict[str, int] = {}  # MIDs not in the given names: kept as MIDs, counted
    for lineno, row in csv_rows(read_manifest_text(path), skipinitialspace=True, comments=True):
        if row is None:
            continue

        def build(row=row):
            vid, start, end, mids = csv_fields(row, "YTID, start_seconds, end_seconds, "
                                                    "positive_labels")
            s, e = parse_seconds(start, "start_seconds"), parse_seconds(end, "end_seconds")
            if e <= s:
                raise ValueError(f"end_seconds {e} <= start_seconds {s}")
            if clip_seconds:
                e = min(e, s + clip_seconds)
            mid_list = [m.strip() for m in mids.split(",") if m.strip()]
            if not mid_list:
                raise ValueError("no positive_labels")
            labels = tuple(names.get(m, m) for m in mid_list)
            if names:
                for m in mid_list:
                    if m not in names:
                        unknown[m] = unknown.get(m, 0) + 1
            return ManifestEntry(parse_video_id(vid), s, e, labels[0], labels, split, None, lineno)
        out.row(lineno, build)
    out.manifest.unknown_labels = unknown
    return out.manifest


@MANIFEST_READERS.register("music")
def read_music(path: str, clip_seconds: float = DEFAULT_CLIP_SECONDS, start_seconds: float = 0.0,
               val_fraction: float = 0.1, test_fraction: float = 0.1,
               skip_malformed: bool = False) -> Manifest:
    """MUSIC JSON ``{"videos": {instrument: [youtube_id, ...]}}`` (solo or duet keys)."""
    try:
        data = json.loads(read_manifest_text(path))
    except json.JSONDecodeError as exc:
        raise ManifestError(path, exc.lineno, f"invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
        raise ManifestError(path, None, 'expected {"videos": {instrument: [youtube_id, ...]}}')
    out = RowCollector(path, skip_malformed)
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
                v = parse_video_id(vid)
                h = hash_fraction(v)
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
                 skip_malformed: bool = False) -> Manifest:
    """CSV (with header) or Parquet of ``url|path, start, end, labels, split[, video_id]``."""
    out = RowCollector(path, skip_malformed)
    if path.endswith(".parquet"):
        records = read_manifest_records(path)
        rows = [(i + 1, r) for i, r in enumerate(records)]
        where_prefix = "row "
    else:
        text = read_manifest_text(path)
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
            raw_start = r.get("start")
            start = parse_seconds(raw_start if raw_start not in (None, "") else 0, "start")
            end_raw = r.get("end")
            end = start + clip_seconds if end_raw in (None, "") else parse_seconds(end_raw, "end")
            if end <= start:
                raise ValueError(f"end {end} <= start {start}")
            labels = _split_labels(r.get("labels", r.get("label")))
            if not labels:
                raise ValueError("missing labels")
            vid = r.get("video_id")
            vid = parse_video_id(vid) if vid not in (None, "") else _stem_id(src)
            split = str(r.get("split") or "train").strip()
            return ManifestEntry(vid, start, end, labels[0], labels, split, src, lineno)
        out.row(f"{where_prefix}{lineno}" if where_prefix else lineno, build)
    return out.manifest


AVE_SPLIT_FILES = {"trainset": "train", "valset": "val", "testset": "test"}


@MANIFEST_READERS.register("ave")
def read_ave(path: str, clip_seconds: float = DEFAULT_CLIP_SECONDS, split: str | None = None,
             event_segment: bool = False, skip_malformed: bool = False) -> Manifest:
    """AVE annotations: a header line, then ``Category&VideoID&Quality&StartTime&EndTime``.

    The split is the file's (``trainSet.txt`` → train, ``valSet.txt`` → val, ``testSet.txt`` →
    test) unless ``split`` is given (needed for ``Annotations.txt``, which lists every video)."""
    stem = os.path.splitext(os.path.basename(path.rstrip("/")))[0].lower()
    split = split or AVE_SPLIT_FILES.get(stem, "train")
    out = RowCollector(path, skip_malformed)
    lines = read_manifest_text(path).splitlines()
    if lines and lines[0].split("&")[0].strip().lower() != "category":
        raise ManifestError(path, 1, "expected the AVE header line "
                                     "Category&VideoID&Quality&StartTime&EndTime")
    for lineno, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue

        def build(text=text):
            fields = [x.strip() for x in text.split("&")]
            if len(fields) != 5:
                raise ValueError(f"expected 5 '&'-separated fields (Category&VideoID&Quality&"
                                 f"StartTime&EndTime), got {len(fields)}")
            category, vid, _quality, start, end = fields
            if not category:
                raise ValueError("empty Category")
            s, e = parse_seconds(start, "StartTime"), parse_seconds(end, "EndTime")
            if e <= s:
                raise ValueError(f"EndTime {e} <= StartTime {s}")
            if e > clip_seconds:
                raise ValueError(f"EndTime {e} is past the {clip_seconds:g}-s AVE video")
            begin, finish = (s, e) if event_segment else (0.0, clip_seconds)
            return ManifestEntry(parse_video_id(vid), begin, finish, category, (category,), split,
                                 None, lineno)
        out.row(lineno, build)
    return out.manifest
