"""Data for training: a streaming loader over Parquet feature shards (``ial.data.loader``)."""

from ial.data.loader import (
    LoaderBatch,
    LoaderPosition,
    ShardEpoch,
    ShardRows,
    ShardStream,
    scan_split,
)

__all__ = ["LoaderBatch", "LoaderPosition", "ShardEpoch", "ShardRows", "ShardStream", "scan_split"]
