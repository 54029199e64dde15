"""The feature shard contract (DESIGN.md), defined once and validated on read.

A shard is a Parquet file ``<root>/shards/<dataset>/shard-NNNNN.parquet`` with one row per clip:

=================  ==========================  ===============================================
column             Arrow type                  content
=================  ==========================  ===============================================
clip_id            string                      ``{video_id}_{start_ms}``
dataset            string
label              string                      primary label
labels             list<string>
split              string                      train | val | test
audio              binary                      int16 little-endian PCM, mono, 11025 Hz,
                                               exactly ``audio_samples`` samples
audio_samples      int32                       samples (110250 for 10 s)
audio_pad          int32                       samples padded (>0) or trimmed (<0) to fit
spec               binary                      float16 (256, T) warped STFT magnitude, C order
spec_shape         list<int32>                 [256, T]
frames             list<binary>                K JPEG images (224 px short side)
frame_times        list<float32>               seconds into the clip of each frame
frame_features     binary                      float16 (K, C, H, W) frozen ResNet-18 maps
frame_features_shape list<int32>               [K, C, H, W]
=================  ==========================  ===============================================

Shard-level (Parquet key/value) metadata, under ``b"ial"`` as JSON: featurizer version, config
hash, the config itself, visual weights description (``"none (random init)"`` is said loudly).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from preprocessing.clip_index import SchemaError, validate_table

SHARD_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("labels", pa.list_(pa.string())),
        pa.field("split", pa.string()),
        pa.field("audio", pa.binary(), nullable=False),
        pa.field("audio_samples", pa.int32(), nullable=False),
        pa.field("audio_pad", pa.int32()),
        pa.field("spec", pa.binary(), nullable=False),
        pa.field("spec_shape", pa.list_(pa.int32()), nullable=False),
        pa.field("frames", pa.list_(pa.binary())),
        pa.field("frame_times", pa.list_(pa.float32())),
        pa.field("frame_features", pa.binary(), nullable=False),
        pa.field("frame_features_shape", pa.list_(pa.int32()), nullable=False),
    ]
)

METADATA_KEY = b"ial"


@dataclass
class ClipFeatures:
    """One decoded shard row.

    audio: (L,) float32 in [-1, 1] samples @ 11025 Hz; spec: (256, T) float32, None when the
    row was read without it; frames: K JPEG bytes ([] when none were stored or read);
    frame_features: (K, C, H, W) float32.
    """

    clip_id: str
    dataset: str
    label: str
    labels: list[str]
    split: str
    audio: np.ndarray
    spec: np.ndarray | None
    frames: list[bytes]
    frame_times: list[float]
    frame_features: np.ndarray

    def pixels(self) -> np.ndarray:
        """The K stored frames decoded. Shape: (K, S, S, 3) uint8 RGB."""
        from preprocessing.frames import decode_jpeg

        return np.stack([decode_jpeg(f) for f in self.frames])


def encode_row(
    *, clip_id: str, dataset: str, label: str, labels: list[str], split: str,
    audio: np.ndarray, audio_pad: int, spec: np.ndarray, frames: list[bytes],
    frame_times: list[float], frame_features: np.ndarray,
) -> dict:
    """A shard row (dict matching SHARD_SCHEMA) from arrays. audio: (L,) float in [-1, 1]."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")
    spec16 = np.ascontiguousarray(spec, dtype="<f2")
    feat16 = np.ascontiguousarray(frame_features, dtype="<f2")
    return {
        "clip_id": clip_id, "dataset": dataset, "label": label, "labels": list(labels),
        "split": split, "audio": pcm.tobytes(), "audio_samples": int(pcm.shape[0]),
        "audio_pad": int(audio_pad), "spec": spec16.tobytes(), "spec_shape": list(spec16.shape),
        "frames": list(frames), "frame_times": [float(t) for t in frame_times],
        "frame_features": feat16.tobytes(), "frame_features_shape": list(feat16.shape),
    }


def decode_row(row: dict) -> ClipFeatures:
    """A ``ClipFeatures`` from a row dict (``table.to_pylist()`` item). A row read without its
    ``spec`` / ``frames`` columns (``LOADER_COLUMNS``) gets ``spec`` None / ``frames`` []."""
    audio = np.frombuffer(row["audio"], dtype="<i2").astype(np.float32) / 32767.0
    if audio.shape[0] != row["audio_samples"]:
        raise SchemaError(f"clip {row['clip_id']}: audio has {audio.shape[0]} samples, "
                          f"audio_samples says {row['audio_samples']}")
    spec = None
    if "spec" in row:
        spec = np.frombuffer(row["spec"], dtype="<f2").reshape(row["spec_shape"]).astype(
            np.float32)
    feats = np.frombuffer(row["frame_features"], dtype="<f2").reshape(
        row["frame_features_shape"]).astype(np.float32)
    return ClipFeatures(
        clip_id=row["clip_id"], dataset=row["dataset"], label=row["label"],
        labels=list(row["labels"] or []), split=row["split"], audio=audio, spec=spec,
        frames=list(row.get("frames") or []), frame_times=list(row["frame_times"] or []),
        frame_features=feats,
    )


# What training reads of a shard (ial.data.loader): every column but the spectrogram and the
# JPEG frames, which it does not use (the frames only for a trainable trunk: + "frames").
LOADER_COLUMNS = [name for name in SHARD_SCHEMA.names
                  if name not in ("spec", "spec_shape", "frames")]


def shard_columns(columns: list[str] | None = None) -> pa.Schema:
    """SHARD_SCHEMA, or only its fields ``columns``, in that order."""
    if columns is None:
        return SHARD_SCHEMA
    return pa.schema([SHARD_SCHEMA.field(name) for name in columns])


def validate_shard(table: pa.Table, source: str) -> pa.Table:
    """Check a shard table against SHARD_SCHEMA (names the file and column on error)."""
    return validate_table(table, SHARD_SCHEMA, source)


def shard_metadata(table_or_schema: pa.Table | pa.Schema) -> dict:
    schema = table_or_schema.schema if isinstance(table_or_schema, pa.Table) else table_or_schema
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def with_metadata(schema: pa.Schema, metadata: dict) -> pa.Schema:
    return schema.with_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})
