"""Synthetic feature shards for tests and benchmarks (no media, no featurizer needed).

Clips are class-dependent tones plus noise, and their frame features carry the class in one
channel, so a separator can learn something from them. The layout is exactly featurize's: shard
files, per-shard stats (the completion marker) and the dataset index (``preprocessing.shards``).
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ial.storage import Storage, atomic_write, write_text
from preprocessing.shard_schema import SHARD_SCHEMA, encode_row, with_metadata
from preprocessing.shards import shard_name, shard_url, stats_url, write_dataset_index

CLASSES = ["accordion", "cello", "flute", "guitar"]


def write_synthetic_shards(root: str, dataset: str = "toy", shards: int = 3, rows: int = 8,
                 samples: int = 4096, feature_shape=(1, 8, 2, 2),
                 splits: tuple[str, ...] = ("train", "train", "train", "val"), seed: int = 0,
                 frame_size: int | None = None) -> list[str]:
    """Feature shards of synthetic clips (class-dependent tones + noise), as featurize lays them
    out (shard files, per-shard stats marking completion, dataset index).

    Clip k is in split ``splits[k % len(splits)]``. ``frame_size``: also store K JPEG frames of
    that size (a class colour), for models that take frames. Returns the clip ids.
    """
    rng = np.random.default_rng(seed)
    store = Storage(root)
    clip_ids = []
    t = np.arange(samples) / 11025.0
    for s in range(shards):
        table_rows = []
        for r in range(rows):
            k = s * rows + r
            label = CLASSES[(k // 3) % len(CLASSES)]  # val rows get every class too
            freq = 220.0 * (1 + CLASSES.index(label))
            audio = 0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(samples)
            feats = rng.standard_normal(feature_shape).astype(np.float32) * 0.1
            feats[:, CLASSES.index(label)] += 1.0  # the visual features say which class sounds
            split = splits[k % len(splits)]
            clip_id = f"vid{k:04d}_{1000 * k}"
            table_rows.append(encode_row(
                clip_id=clip_id, dataset=dataset, label=label, labels=[label], split=split,
                audio=audio.astype(np.float32), audio_pad=0, spec=np.zeros((256, 4), np.float32),
                frames=_frames(label, feature_shape[0], frame_size),
                frame_times=[0.0] * feature_shape[0], frame_features=feats))
            clip_ids.append(clip_id)
        schema = with_metadata(SHARD_SCHEMA, {"synthetic": True})
        table = pa.Table.from_pylist(table_rows, schema=schema)
        with atomic_write(shard_url(store, dataset, s)) as f:
            pq.write_table(table, f)
        ids = [r["clip_id"] for r in table_rows]
        write_text(stats_url(store, dataset, s), json.dumps({
            "shard": shard_name(s), "dataset": dataset, "rows": rows, "clip_ids": ids, "failed": [],
            "splits": dict(Counter(r["split"] for r in table_rows)),
            "classes": dict(Counter(r["label"] for r in table_rows))}))
    write_dataset_index(store, dataset)
    return clip_ids


def _frames(label: str, k: int, size: int | None) -> list[bytes]:
    """K JPEG frames filled with a colour of ``label`` (none when ``size`` is None)."""
    if size is None:
        return []
    from preprocessing.frames import encode_jpeg

    colour = np.array([(37 * (1 + CLASSES.index(label))) % 256, 90, 200], np.uint8)
    return [encode_jpeg(np.broadcast_to(colour, (size, size, 3)).copy(), 90) for _ in range(k)]
