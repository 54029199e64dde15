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
- a remote file read whole is fetched in one request; a read of some columns (or row groups)
  fetches the footer once per ``ParquetReader``, then only the byte ranges of the requested
  column chunks, each placed at its own offset in an anonymous map of the file's size. Pages that
  are never written take no memory, so reading three small columns of a 130 MB shard on S3
  fetches and holds about those columns only.

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
    return ParquetReader(url).read(columns)


def read_parquet_schema(url: str) -> pa.Schema:
    """The Arrow schema (with its metadata) of the Parquet file at ``url``, from its footer only."""
    return ParquetReader(url).schema()


def iter_parquet_row_groups(url: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The row groups of the Parquet file at ``url`` as tables, one at a time (all columns, or
    only ``columns``). A remote file is fetched one row group at a time: memory stays bounded."""
    return ParquetReader(url).iter_row_groups(columns)


class ParquetReader:
    """One Parquet file (local path or ``s3://`` URL). Nothing is read until asked; a remote
    file's size and footer are fetched once and reused by every later read of this reader (the
    schema, then each row group, costs one footer request, not one per read)."""

    def __init__(self, url: str):
        self._fs, self._path = filesystem(url)
        self._remote = is_remote(url)
        self._local: pa.Buffer | None = None
        self._size: int | None = None
        self._tail = b""  # a remote file's last bytes, at least its whole footer when valid
        self._meta: pq.FileMetaData | None = None  # parsed from _tail once

    def schema(self) -> pa.Schema:
        """The Arrow schema with its metadata, from the footer only."""
        return pq.read_schema(self.buffer(columns=[]))

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """The whole file (all columns, or only ``columns``) as a table."""
        return _open(self.buffer(columns), columns).read(columns=columns, use_threads=False)

    def iter_row_groups(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """The row groups as tables, one at a time (remote: each fetched when it is reached,
        into a ``ParquetFile`` given the footer this reader parsed once, never parsed again)."""
        meta = self._metadata() if self._remote else None
        file = _open(self.buffer(columns=[]), columns, meta)  # local: the whole mmapped file
        for i in range(file.num_row_groups):
            if self._remote:
                file = pq.ParquetFile(self.buffer(columns, [i]), metadata=meta)
            yield file.read_row_group(i, columns=columns, use_threads=False)

    def buffer(self, columns: list[str] | None = None,
               row_groups: list[int] | None = None) -> pa.BufferReader:
        """An in-memory Arrow file with what reading ``columns`` (all if None, only the footer if
        ``[]``) of ``row_groups`` (all if None) needs: the mmapped local file, a remote file's
        bytes in one request when all of it is wanted, otherwise a sparse map of the file's size
        holding the footer and the requested column chunks at their offsets."""
        if not self._remote:
            return pa.BufferReader(self._local_file())
        if columns is None and row_groups is None:
            return pa.BufferReader(self._fs.cat_file(self._path))
        tail = self._footer()
        size = self._size
        if size < 12:  # shorter than the magic bytes and footer length: let Arrow name the problem
            return pa.BufferReader(tail)
        sparse = mmap.mmap(-1, size)
        sparse[size - len(tail):] = tail
        if columns != [] and tail[-4:] == b"PAR1":
            ranges = _merge(_chunk_ranges(self._metadata(), columns, row_groups))
            if ranges:
                starts, ends = zip(*ranges)
                for start, data in zip(starts, self._fs.cat_ranges([self._path] * len(ranges),
                                                                   starts, ends)):
                    sparse[start:start + len(data)] = data
        return pa.BufferReader(pa.py_buffer(sparse))

    def _local_file(self) -> pa.Buffer:
        """The local file, memory-mapped once (empty: an empty buffer, Arrow names it)."""
        if self._local is None:
            with open(self._path, "rb") as f:
                empty = os.fstat(f.fileno()).st_size == 0
                self._local = pa.py_buffer(
                    b"" if empty else mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        return self._local

    def _metadata(self) -> pq.FileMetaData:
        """A remote file's footer, parsed once (not once per row group read)."""
        if self._meta is None:
            self._meta = pq.read_metadata(pa.BufferReader(self._footer()))
        return self._meta

    def _footer(self) -> bytes:
        """A remote file's last bytes including its whole footer (fetched once: the size, a
        ``FOOTER_SAMPLE`` from the end, and the rest of a longer footer)."""
        if self._size is None:
            size = self._fs.size(self._path)
            if size < 12:  # no room for a footer: the whole (short) file
                self._size, self._tail = size, self._fs.cat_file(self._path)
                return self._tail
            tail = self._fs.cat_file(self._path, start=max(0, size - FOOTER_SAMPLE), end=size)
            footer_len = int.from_bytes(tail[-8:-4], "little") + 8
            if tail[-4:] == b"PAR1" and len(tail) < footer_len <= size:
                tail = self._fs.cat_file(self._path, start=size - footer_len, end=size)
            self._size, self._tail = size, tail
        return self._tail


def _open(source: pa.BufferReader, columns: list[str] | None,
          metadata: pq.FileMetaData | None = None) -> pq.ParquetFile:
    """``ParquetFile`` of ``source`` (its footer parsed by Arrow, or ``metadata`` when given);
    ArrowInvalid naming the columns it lacks (a ``ParquetFile`` read would leave them out)."""
    file = pq.ParquetFile(source, metadata=metadata)
    missing = [c for c in columns or [] if c not in file.schema_arrow.names]
    if missing:
        raise pa.ArrowInvalid(f"no column {', '.join(map(repr, missing))} in the file (it has "
                              f"{', '.join(file.schema_arrow.names)})")
    return file


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
