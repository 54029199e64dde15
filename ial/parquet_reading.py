"""Reading Parquet files (local or ``s3://``) without starting any Arrow thread.

The one way the project reads Parquet. Every read hands Arrow an in-memory file
(``pyarrow.BufferReader``) and uses ``ParquetFile`` with ``use_threads=False``. Why: for any
other source (a path, an OS file, a memory-mapped ``pa.memory_map``, a Python file object) or
through ``pq.read_table``, Arrow serves the read from its I/O or CPU thread pool, and a process
that exits while such a pool has threads aborts now and then with "terminate called without an
active exception" (exit 134 after all its work is done; apache/arrow#34314, pyarrow 26 here).
Measured on this machine, 60 short processes each: a ``read_table`` from Python file objects
aborted 22 times, one from a ``BufferReader`` with the default threads 5 times. A CI run of the
cluster test also saw it once with ``use_threads=False`` on a Python file. A ``BufferReader``
read through ``ParquetFile`` starts no thread at all (``tests/ial/test_parquet_reading.py``
counts them), so there is nothing left to abort.

What is held in memory:
- a local file is memory-mapped by Python (``mmap``): pages are read from disk as Arrow touches
  them, nothing is copied;
- a remote file is fetched in parts: its footer, then only the byte ranges of the requested
  column chunks (and row groups), each placed at its own offset in an anonymous map of the file's
  size. Pages that are never written take no memory, so reading three small columns of a 130 MB
  shard on S3 fetches and holds about those columns only.

Errors are pyarrow's (``ArrowInvalid``, ``OSError``) or the filesystem's; callers name the file.
"""

from __future__ import annotations

import mmap
import os
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ial.storage import filesystem, is_remote

FOOTER_SAMPLE = 64 * 1024  # bytes fetched from a remote file's end to find its footer
MERGE_GAP = 64 * 1024  # remote column chunks closer than this are fetched in one request


def read_parquet(url: str, columns: list[str] | None = None) -> pa.Table:
    """The Parquet file at ``url`` as a table (all columns, or only ``columns``; schema metadata
    kept)."""
    return _open(parquet_buffer(url, columns=columns), columns).read(columns=columns,
                                                                     use_threads=False)


def read_parquet_schema(url: str) -> pa.Schema:
    """The Arrow schema (with its metadata) of the Parquet file at ``url``, from its footer only."""
    return pq.read_schema(parquet_buffer(url, columns=[]))


def iter_parquet_row_groups(url: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The row groups of the Parquet file at ``url`` as tables, one at a time (all columns, or
    only ``columns``). A remote file is fetched one row group at a time: memory stays bounded."""
    footer = parquet_buffer(url, columns=[])
    for i in range(_open(footer, columns).num_row_groups):
        source = parquet_buffer(url, columns, [i]) if is_remote(url) else footer
        yield pq.ParquetFile(source).read_row_group(i, columns=columns, use_threads=False)


def _open(source: pa.BufferReader, columns: list[str] | None) -> pq.ParquetFile:
    """``ParquetFile`` of ``source``; ArrowInvalid naming the columns it lacks (a ``ParquetFile``
    read would silently leave them out)."""
    file = pq.ParquetFile(source)
    missing = [c for c in columns or [] if c not in file.schema_arrow.names]
    if missing:
        raise pa.ArrowInvalid(f"no column {', '.join(map(repr, missing))} in the file (it has "
                              f"{', '.join(file.schema_arrow.names)})")
    return file


def parquet_buffer(url: str, columns: list[str] | None = None,
                   row_groups: list[int] | None = None) -> pa.BufferReader:
    """An in-memory Arrow file with what reading ``columns`` (all if None, only the footer if
    ``[]``) of ``row_groups`` (all if None) of the Parquet file at ``url`` needs."""
    fs, path = filesystem(url)
    if not is_remote(url):
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return pa.BufferReader(b"")  # Arrow raises its own "file size is 0 bytes"
            return pa.BufferReader(pa.py_buffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)))
    size = fs.size(path)
    if size < 12:  # shorter than the magic bytes and footer length: let Arrow name the problem
        return pa.BufferReader(fs.cat_file(path))
    sparse = mmap.mmap(-1, size)
    tail = fs.cat_file(path, start=max(0, size - FOOTER_SAMPLE), end=size)
    footer_len = int.from_bytes(tail[-8:-4], "little") + 8
    if tail[-4:] == b"PAR1" and len(tail) < footer_len <= size:
        tail = fs.cat_file(path, start=size - footer_len, end=size)
    sparse[size - len(tail):] = tail
    if columns != [] and tail[-4:] == b"PAR1":
        ranges = _merge(_chunk_ranges(pq.read_metadata(pa.BufferReader(pa.py_buffer(sparse))),
                                      columns, row_groups))
        if ranges:
            starts, ends = zip(*ranges)
            for start, data in zip(starts, fs.cat_ranges([path] * len(ranges), starts, ends)):
                sparse[start:start + len(data)] = data
    return pa.BufferReader(pa.py_buffer(sparse))


def _chunk_ranges(meta: pq.FileMetaData, columns: list[str] | None,
                  row_groups: list[int] | None) -> list[tuple[int, int]]:
    """``(start, end)`` byte offsets of the column chunks that a read of ``columns`` (top-level
    names; all if None) in ``row_groups`` (all if None) decodes."""
    ranges = []
    for g in range(meta.num_row_groups) if row_groups is None else row_groups:
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            if columns is not None and chunk.path_in_schema.split(".")[0] not in columns:
                continue
            offsets = [chunk.data_page_offset]
            if chunk.has_dictionary_page and chunk.dictionary_page_offset:
                offsets.append(chunk.dictionary_page_offset)
            start = min(offsets)
            ranges.append((start, start + chunk.total_compressed_size))
    return ranges


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ranges, those less than ``MERGE_GAP`` apart joined into one request."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start - merged[-1][1] < MERGE_GAP:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
