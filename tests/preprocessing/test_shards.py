"""Shard files: configs, schema validation on read (errors name the file), completion marker."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ial.config import ConfigError, load_config
from ial.storage import Storage, write_text
from preprocessing.clip_index import SchemaError
from preprocessing.featurize.config import FeaturizeConfig, config_hash
from preprocessing.shard_schema import SHARD_SCHEMA
from preprocessing.shards import (build_dataset_index, dataset_digest, iter_shard_rows,
                                  list_shards, read_dataset_index, read_shard, shard_url,
                                  stats_url)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "featurize"


def test_default_yaml_matches_dataclass_and_demo_loads():
    assert load_config(FeaturizeConfig, CONFIGS / "default.yaml") == FeaturizeConfig()
    demo = load_config(FeaturizeConfig, CONFIGS / "demo.yaml")
    assert demo.frame_size == 64 and demo.num_frames == 3


def test_config_validation_names_field():
    with pytest.raises(ConfigError, match="frame_times"):
        load_config(FeaturizeConfig, None, ["num_frames=2"])
    with pytest.raises(ConfigError, match="frame_size"):
        load_config(FeaturizeConfig, None, ["frame_size=100"])
    with pytest.raises(ConfigError, match=r"frame_times\[1\]"):
        load_config(FeaturizeConfig, None, ["frame_times=[1.0,10.5,3.0]"])


def test_config_hash_covers_content_not_run_fields():
    base = config_hash(FeaturizeConfig())
    run_fields = FeaturizeConfig(n_workers=7, dask_address="tcp://h:1", root="s3://b")
    assert config_hash(run_fields) == base
    assert config_hash(FeaturizeConfig(jpeg_quality=80)) != base
    assert config_hash(FeaturizeConfig(seed=1)) != base


def test_incomplete_shard_invisible_and_bad_file_named(tmp_path):
    root = Storage(tmp_path)
    url = shard_url(root, "d", 0)
    Path(url).parent.mkdir(parents=True)
    pq.write_table(SHARD_SCHEMA.empty_table(), url)
    assert list_shards(root, "d") == []  # no stats file: not complete
    write_text(stats_url(root, "d", 0), json.dumps({"shard": "shard-00000", "rows": 0}))
    assert list_shards(root, "d") == [url]
    assert read_shard(url).num_rows == 0
    bad = shard_url(root, "d", 1)
    pq.write_table(pa.table({"clip_id": ["a"]}), bad)
    with pytest.raises(SchemaError, match=r"shard-00001\.parquet: missing column 'dataset'"):
        read_shard(bad)
    with pytest.raises(SchemaError, match=r"shard-00001\.parquet"):
        next(iter_shard_rows(bad))
    Path(bad).write_bytes(b"not parquet")
    with pytest.raises(SchemaError, match=r"shard-00001\.parquet: not a readable"):
        read_shard(bad)
    with pytest.raises(FileNotFoundError, match="index.json"):
        read_dataset_index(root, "d")


def test_a_failing_connection_is_not_blamed_on_the_shard(tmp_path, monkeypatch):
    from ial.parquet_reading import ParquetReader

    url = str(tmp_path / "shard-00000.parquet")
    pq.write_table(SHARD_SCHEMA.empty_table(), url)
    for error, raised in [(OSError("Corrupt snappy compressed data."), SchemaError),
                          (FileNotFoundError(2, "No such file"), SchemaError),
                          (ConnectionResetError(104, "Connection reset by peer"),
                           ConnectionResetError),
                          (BrokenPipeError(32, "Broken pipe"), BrokenPipeError)]:
        def fail(self, *args, error=error):
            raise error

        monkeypatch.setattr(ParquetReader, "read", fail)
        with pytest.raises(raised, match=str(error.args[-1])):
            read_shard(url)


def test_the_loader_reads_only_its_columns_and_decodes_them(tmp_path):
    from ial.data.synthetic import write_synthetic_shards
    from preprocessing.shard_schema import LOADER_COLUMNS, decode_row

    root = str(tmp_path)
    write_synthetic_shards(root, "d", shards=1, rows=2, frame_size=16)
    url = shard_url(Storage(root), "d", 0)
    table = read_shard(url, LOADER_COLUMNS)
    assert table.column_names == LOADER_COLUMNS and "spec" not in table.column_names
    assert table.schema.metadata == read_shard(url).schema.metadata  # the featurizer's, kept
    whole, part = (decode_row(t.slice(0, 1).to_pylist()[0]) for t in (read_shard(url), table))
    assert part.spec is None and part.frames == [] and whole.spec.shape == (256, 4)
    assert len(whole.frames) == 1
    assert (part.audio == whole.audio).all() and (part.frame_features == whole.frame_features).all()
    with pytest.raises(SchemaError, match=r"shard-00000\.parquet: missing column 'spec'"):
        read_shard(_without(url, "spec", tmp_path), ["clip_id", "spec"])


def _without(url: str, column: str, folder: Path) -> str:
    """A copy of the shard at ``url`` without ``column``, under the same file name."""
    out = folder / "copy" / Path(url).name
    out.parent.mkdir()
    pq.write_table(pq.read_table(url).drop_columns([column]), out)
    return str(out)


def test_build_dataset_index_counts():
    stats = [{"shard": "shard-00000", "rows": 2, "failed": [{"clip_id": "x", "reason": "r"}],
              "splits": {"train": 2}, "classes": {"a": 1, "b": 1}, "config_hash": "h"},
             {"shard": "shard-00001", "rows": 1, "failed": [], "splits": {"val": 1},
              "classes": {"a": 1}, "config_hash": "h"}]
    index = build_dataset_index("d", stats)
    assert index["rows"] == 3 and index["failed"] == 1 and index["num_shards"] == 2
    assert index["splits"] == {"train": 2, "val": 1} and index["classes"] == {"a": 2, "b": 1}
    assert [s["file"] for s in index["shards"]] == ["shard-00000.parquet", "shard-00001.parquet"]


def test_dataset_digest_names_the_content_not_the_timings(tmp_path):
    root = Storage(tmp_path)

    def stats(shard, **kw):
        values = {"shard": f"shard-{shard:05d}", "rows": 2, "clip_ids": ["a", "b"],
                  "splits": {"train": 2}, "classes": {"x": 2}, "bytes": 100,
                  "config_hash": "h", "seconds": 1.5, "worker": "w1"}
        write_text(stats_url(root, "d", shard), json.dumps({**values, **kw}))

    stats(0)
    first = dataset_digest(root, "d")
    stats(0, seconds=9.0, worker="w2", peak_rss_mb=1.0)  # the same shard written again
    assert dataset_digest(root, "d") == first
    stats(0, splits={"train": 1, "val": 1})  # relabeled
    assert dataset_digest(root, "d") != first
    stats(0)
    stats(1, clip_ids=["c"])  # a new shard
    assert dataset_digest(root, "d") != first and dataset_digest(root, "d", [0]) == first
    both = dataset_digest(root, "d")
    stats(1, clip_ids=["c"], config_hash="other")  # featurized under another config
    assert dataset_digest(root, "d") != both
