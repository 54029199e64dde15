"""The clip index contract (DESIGN.md): one row per manifest entry and its latest attempt outcome.

Written by ``preprocessing.ingest`` under ``<root>/clips/<dataset>/``; read by featurization
(rows with ``status == "ok"``). The schema is defined here, once; ``validate_clip_index`` checks a
table against it on read.
"""

from __future__ import annotations

import pyarrow as pa

from ial.errors import UserError

STATUSES = ("ok", "unavailable", "failed", "invalid")

CLIP_INDEX_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),  # f"{video_id}_{start_ms}"
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("label", pa.string()),  # primary label (display name)
        pa.field("labels", pa.list_(pa.string())),  # all labels (AudioSet has several)
        pa.field("split", pa.string()),  # train | val | test
        pa.field("url", pa.string()),  # source URL (no credentials)
        pa.field("start", pa.float64()),  # seconds into the source video
        pa.field("end", pa.float64()),  # seconds
        pa.field("status", pa.string(), nullable=False),  # one of STATUSES
        pa.field("reason", pa.string()),  # why, for every status but ok ("" for ok)
        pa.field("path", pa.string()),  # clip URL under the root, when status == ok
        pa.field("duration", pa.float64()),  # seconds of the written clip
        pa.field("sha256", pa.string()),  # of the clip file
        pa.field("silent", pa.bool_()),  # audio RMS below threshold (flag, clip still ok)
        pa.field("attempts", pa.int32()),  # download attempts so far
        pa.field("batch", pa.string()),  # batch id the clip belongs to
        pa.field("updated_at", pa.timestamp("ms", tz="UTC")),
    ]
)


def clip_id(video_id: str, start: float) -> str:
    """The stable clip id ``{video_id}_{start_ms}`` (``start`` in s)."""
    return f"{video_id}_{int(round(start * 1000))}"


def video_id_of(clip_id: str) -> str:
    """The video id of a clip id (``{video_id}_{start_ms}`` → ``video_id``)."""
    return clip_id.rsplit("_", 1)[0]


def hash_fraction(text: str) -> float:
    """A number in [0, 1] fixed by ``text`` (sha1): deterministic splits by video id."""
    import hashlib

    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


class SchemaError(UserError, ValueError):
    """A Parquet table does not match a project schema; the message names the file and column."""


def validate_table(table: pa.Table, schema: pa.Schema, source: str) -> pa.Table:
    """Check that ``table`` has every column of ``schema`` with a compatible type.

    Returns the table cast to ``schema`` (column order and types), raising SchemaError that names
    ``source`` and the offending column otherwise.
    """
    for field in schema:
        if field.name not in table.column_names:
            raise SchemaError(f"{source}: missing column {field.name!r} (expected {field.type})")
        actual = table.schema.field(field.name).type
        if actual != field.type and not (pa.types.is_null(actual)):
            try:
                table.column(field.name).cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise SchemaError(
                    f"{source}: column {field.name!r} has type {actual}, expected {field.type}"
                ) from None
        if not field.nullable and table.column(field.name).null_count:
            raise SchemaError(f"{source}: column {field.name!r} has null values")
    return table.select(schema.names).cast(schema)


def validate_clip_index(table: pa.Table, source: str) -> pa.Table:
    table = validate_table(table, CLIP_INDEX_SCHEMA, source)
    bad = set(table.column("status").to_pylist()) - set(STATUSES)
    if bad:
        raise SchemaError(f"{source}: unknown status value(s) {sorted(bad)}; expected {STATUSES}")
    return table


def clip_index_dir(root, dataset: str) -> str:
    """URL of the folder holding the clip index parts of ``dataset`` under Storage ``root``."""
    return root.url("clips", dataset, "index")


def write_clip_index_part(root, dataset: str, batch_id: str, rows: list[dict]) -> str:
    """Write (atomically, replacing any earlier version) the index rows of one batch.

    One part per batch: re-running a batch replaces its part, so rows are never duplicated.
    Returns the part's URL.
    """
    import pyarrow.parquet as pq

    from ial.storage import atomic_write

    table = validate_clip_index(pa.Table.from_pylist(rows, schema=CLIP_INDEX_SCHEMA),
                                f"batch {batch_id}")
    url = f"{clip_index_dir(root, dataset)}/{batch_id}.parquet"
    with atomic_write(url) as f:
        pq.write_table(table, f)
    return url


def read_clip_index(root, dataset: str) -> pa.Table:
    """The clip index of ``dataset``: all batch parts, validated, one row per clip_id (the most
    recently updated). An empty table (with the schema) when nothing was ingested yet."""
    from ial.parquet_reading import read_parquet
    from ial.storage import listdir

    tables = []
    for url in listdir(clip_index_dir(root, dataset)):
        if not url.endswith(".parquet") or url.rsplit("/", 1)[-1].startswith("."):
            continue
        tables.append(validate_clip_index(read_parquet(url), url))
    if not tables:
        return CLIP_INDEX_SCHEMA.empty_table()
    return latest_per_clip(pa.concat_tables(tables))


def latest_per_clip(table: pa.Table) -> pa.Table:
    """One row per clip_id: the one with the newest ``updated_at`` (vectorised; sorted by
    clip_id)."""
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return table
    table = table.sort_by([("clip_id", "ascending"), ("updated_at", "ascending")])
    ids = table["clip_id"].combine_chunks()
    last_of_group = pc.not_equal(ids.slice(0, len(ids) - 1), ids.slice(1))
    keep = pa.concat_arrays([last_of_group, pa.array([True])])
    return table.filter(keep)
