import datetime as dt

import pyarrow as pa
import pytest

from ial.storage import Storage
from preprocessing.clip_index import (CLIP_INDEX_SCHEMA, SchemaError, read_clip_index,
                                      validate_clip_index, write_clip_index_part)


def row(clip_id, status, minute):
    return {"clip_id": clip_id, "video_id": clip_id.split("_")[0], "dataset": "d", "label": "x",
            "labels": ["x"], "split": "train", "url": "http://h/v", "start": 0.0, "end": 10.0,
            "status": status, "reason": "" if status == "ok" else "why", "path": None,
            "duration": None, "sha256": None, "silent": False, "attempts": 1, "batch": "b0",
            "updated_at": dt.datetime(2026, 1, 1, 0, minute, tzinfo=dt.timezone.utc)}


def test_latest_row_per_clip_wins(tmp_path):
    root = Storage(tmp_path)
    write_clip_index_part(root, "d", "b0", [row("a_0", "failed", 1), row("b_0", "ok", 1)])
    write_clip_index_part(root, "d", "b1", [row("a_0", "ok", 2)])
    table = read_clip_index(root, "d")
    got = dict(zip(table["clip_id"].to_pylist(), table["status"].to_pylist()))
    assert got == {"a_0": "ok", "b_0": "ok"}
    # re-writing a batch replaces its part: no duplicates
    write_clip_index_part(root, "d", "b0", [row("a_0", "failed", 1), row("b_0", "ok", 3)])
    assert read_clip_index(root, "d").num_rows == 2


def test_empty_and_bad_status(tmp_path):
    assert read_clip_index(Storage(tmp_path), "none").num_rows == 0
    bad = pa.Table.from_pylist([row("a_0", "weird", 1)], schema=CLIP_INDEX_SCHEMA)
    with pytest.raises(SchemaError, match="weird"):
        validate_clip_index(bad, "x.parquet")


def test_missing_column_named(tmp_path):
    t = pa.table({"clip_id": ["a"]})
    with pytest.raises(SchemaError, match="x.parquet: missing column 'video_id'"):
        validate_clip_index(t, "x.parquet")
