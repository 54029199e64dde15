"""Parquet reads: local and on a real S3 API (moto), same tables; no Arrow thread is started."""

from __future__ import annotations

import random
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ial.parquet_reading import (ParquetReader, iter_parquet_row_groups, read_parquet,
                                 read_parquet_schema)
from ial.storage import filesystem, upload_file
from tests.conftest import REPO


def _table(rows: int = 600) -> pa.Table:
    """Columns of the kinds shards have: strings (dictionary-encoded), a nested list of noise (as
    incompressible as audio, most of the file), floats."""
    noise = random.Random(0)
    return pa.table({
        "clip_id": [f"clip-{i:05d}" for i in range(rows)],
        "label": [["violin", "flute", "oboe"][i % 3] for i in range(rows)],
        "spec": [[noise.random() for _ in range(300)] for _ in range(rows)],
        "gain": [i / 7 for i in range(rows)],
    }).replace_schema_metadata({"ial": '{"config_hash": "abc"}'})


@pytest.fixture
def parquet_file(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(_table(), path, row_group_size=128)
    return path


def test_local_reads_equal_pyarrow(parquet_file):
    expected = pq.read_table(parquet_file)
    full = read_parquet(str(parquet_file))
    assert full.equals(expected) and full.schema.metadata == expected.schema.metadata
    assert read_parquet(str(parquet_file), columns=["label"]).equals(expected.select(["label"]))
    assert read_parquet_schema(str(parquet_file)).equals(expected.schema, check_metadata=True)
    groups = list(iter_parquet_row_groups(str(parquet_file), columns=["clip_id", "spec"]))
    assert len(groups) == 5
    assert pa.concat_tables(groups).equals(expected.select(["clip_id", "spec"]))


@pytest.mark.slow
def test_s3_reads_fetch_only_the_requested_columns(parquet_file, s3_root, monkeypatch):
    url = f"{s3_root}/t.parquet"
    upload_file(str(parquet_file), url)
    expected = pq.read_table(parquet_file)
    assert read_parquet(url).equals(expected)
    assert read_parquet_schema(url).equals(expected.schema, check_metadata=True)
    rows = list(iter_parquet_row_groups(url, columns=["gain"]))
    assert pa.concat_tables(rows).equals(expected.select(["gain"]))

    fs, _ = filesystem(url)
    fetched = []
    real = fs.cat_ranges  # the same (cached) filesystem instance serves the reads below

    def counting(paths, starts, ends, **kw):
        fetched.extend(e - s for s, e in zip(starts, ends))
        return real(paths, starts, ends, **kw)

    monkeypatch.setattr(fs, "cat_ranges", counting)
    assert read_parquet(url, columns=["clip_id", "label"]).equals(
        expected.select(["clip_id", "label"]))
    size = parquet_file.stat().st_size
    assert 0 < sum(fetched) < size / 10  # the list column ("spec") is most of the file


@pytest.mark.slow
def test_s3_footer_is_fetched_once_per_reader_and_a_whole_file_in_one_request(
        parquet_file, s3_root, monkeypatch):
    url = f"{s3_root}/t.parquet"
    upload_file(str(parquet_file), url)
    expected = pq.read_table(parquet_file)
    fs, _ = filesystem(url)
    requests = []  # the filesystem methods called, in order
    for name in ("cat_file", "cat_ranges", "size"):
        real = getattr(fs, name)

        def counting(*args, _name=name, _real=real, **kw):
            requests.append(_name)
            return _real(*args, **kw)
        monkeypatch.setattr(fs, name, counting)

    parses = []  # every footer parse: ours (read_metadata), or a ParquetFile given no metadata
    real_open, real_read_metadata = pq.ParquetFile, pq.read_metadata

    def recording_open(source, metadata=None, **kw):
        if metadata is None:
            parses.append("ParquetFile")
        return real_open(source, metadata=metadata, **kw)

    def recording_read_metadata(*args, **kw):
        parses.append("read_metadata")
        return real_read_metadata(*args, **kw)
    monkeypatch.setattr(pq, "ParquetFile", recording_open)
    monkeypatch.setattr(pq, "read_metadata", recording_read_metadata)

    reader = ParquetReader(url)
    assert reader.schema().equals(expected.schema, check_metadata=True)
    parses.clear()
    groups = list(reader.iter_row_groups(columns=["gain"]))
    assert parses == ["read_metadata"]  # the footer is parsed once, not per row group
    assert pa.concat_tables(groups).equals(expected.select(["gain"]))
    # size + footer once, then one ranged request per row group (5 of them)
    assert requests.count("size") == 1 and requests.count("cat_file") == 1
    assert requests.count("cat_ranges") == len(groups) == 5

    requests.clear()
    assert read_parquet(url).equals(expected)
    assert requests == ["cat_file"]


def test_truncated_and_empty_files_raise_arrows_error(tmp_path, parquet_file):
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(parquet_file.read_bytes()[:-100])
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    for bad in (cut, empty):
        with pytest.raises(pa.ArrowInvalid):
            read_parquet(str(bad))


@pytest.mark.slow
def test_truncated_empty_and_tiny_s3_files_raise_arrows_error(parquet_file, s3_root):
    url = f"{s3_root}/cut.parquet"
    fs, path = filesystem(url)
    for data in (parquet_file.read_bytes()[:-100], b"", b"PAR1"):
        fs.pipe_file(path, data)
        for read in (lambda: read_parquet(url, columns=["label"]), lambda: read_parquet(url),
                     lambda: read_parquet_schema(url),
                     lambda: list(iter_parquet_row_groups(url, columns=["label"]))):
            with pytest.raises(pa.ArrowInvalid):
                read()


def test_reads_start_no_arrow_thread(parquet_file):
    """Arrow's pool threads alive at exit can abort a finished process (exit 134): every read
    path must leave the process with the threads it had."""
    code = f"""
import os, pyarrow.parquet
from ial.parquet_reading import iter_parquet_row_groups, read_parquet, read_parquet_schema
threads = lambda: len(os.listdir("/proc/self/task"))
before = threads()
url = {str(parquet_file)!r}
read_parquet(url); read_parquet(url, columns=["label"]); read_parquet_schema(url)
list(iter_parquet_row_groups(url, columns=["spec"]))
print(before, threads())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    before, after = map(int, out.stdout.split())
    assert after == before
    assert ParquetReader(str(parquet_file)).buffer().size() == parquet_file.stat().st_size


def test_a_missing_column_is_named(parquet_file):
    with pytest.raises(pa.ArrowInvalid, match="no column 'split' in the file"):
        read_parquet(str(parquet_file), columns=["clip_id", "split"])
    with pytest.raises(pa.ArrowInvalid, match="no column 'split'"):
        list(iter_parquet_row_groups(str(parquet_file), columns=["split"]))
