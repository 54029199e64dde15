"""Feature shards on storage: names, completion, reading (validated), the dataset index.

Layout under a Storage root (docs/architecture.md)::

    shards/<dataset>/shard-00000.parquet      SHARD_SCHEMA rows (+ metadata under b"ial")
    shards/<dataset>/_stats/shard-00000.json  per-shard stats; written LAST: marks it complete
    shards/<dataset>/index.json               dataset index (shards, rows, per-split/class counts)
    shards/<dataset>/plan.parquet             clip → shard assignment (append-only)
    shards/<dataset>/config.yaml              the featurize config of the latest run

A shard whose stats file is missing is not complete, whatever else exists: readers use
``list_shards``, never a directory listing of the parquet files.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import posixpath
from typing import Iterable, Iterator

import pyarrow as pa

from ial.parquet_reading import ParquetReader, read_parquet_schema
from ial.storage import Storage, filesystem, listdir, read_text, write_text
from preprocessing.clip_index import SchemaError, validate_table
from preprocessing.shard_schema import shard_columns, shard_metadata, validate_shard

INDEX_VERSION = 1


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


def shard_number(name_or_url: str) -> int:
    """``.../shard-00012.parquet`` or ``shard-00012.json`` → 12."""
    base = posixpath.basename(name_or_url).split(".", 1)[0]
    if not base.startswith("shard-"):
        raise ValueError(f"not a shard name: {name_or_url}")
    return int(base[len("shard-"):])


def shards_dir(root: Storage, dataset: str) -> str:
    return root.url("shards", dataset)


def shard_url(root: Storage, dataset: str, shard: int) -> str:
    return root.url("shards", dataset, f"{shard_name(shard)}.parquet")


def stats_url(root: Storage, dataset: str, shard: int) -> str:
    return root.url("shards", dataset, "_stats", f"{shard_name(shard)}.json")


def index_url(root: Storage, dataset: str) -> str:
    return root.url("shards", dataset, "index.json")


def complete_shard_numbers(root: Storage, dataset: str) -> list[int]:
    """Numbers of the shards whose stats file (the completion marker) exists, sorted."""
    numbers = []
    for url in listdir(root.url("shards", dataset, "_stats")):
        name = posixpath.basename(url)
        if name.startswith("shard-") and name.endswith(".json"):
            numbers.append(shard_number(name))
    return sorted(numbers)


def _read_json_many(urls: list[str]) -> list[dict]:
    """Read several small JSON files (concurrently on object stores)."""
    if not urls:
        return []
    fs, _ = filesystem(urls[0])
    paths = [filesystem(u)[1] for u in urls]
    blobs = fs.cat(paths) if len(paths) > 1 else {paths[0]: fs.cat_file(paths[0])}
    out = []
    for url, path in zip(urls, paths):
        try:
            out.append(json.loads(blobs[path]))
        except (KeyError, json.JSONDecodeError) as exc:
            raise ValueError(f"{url}: unreadable shard stats ({exc})") from None
    return out


def read_shard_stats(root: Storage, dataset: str) -> list[dict]:
    """Stats of every complete shard of ``dataset``, in shard order."""
    numbers = complete_shard_numbers(root, dataset)
    return _read_json_many([stats_url(root, dataset, n) for n in numbers])


DIGEST_FIELDS = ("shard", "clip_ids", "splits", "classes", "bytes", "config_hash")


def dataset_digest(root: Storage, dataset: str, shards: Iterable[int] | None = None) -> str:
    """16 hex digits naming what the complete shards of ``dataset`` hold (``shards``: only those
    numbers): each one's clip ids, split and class counts, file size and featurize config hash,
    from its stats (not its timings). A new shard, a rewritten or relabeled one, another featurize
    config: another digest. Training records it in its checkpoints' lineage."""
    stats = read_shard_stats(root, dataset)
    if shards is not None:
        wanted = set(shards)
        stats = [s for s in stats if shard_number(s["shard"]) in wanted]
    text = json.dumps([{k: s.get(k) for k in DIGEST_FIELDS} for s in stats], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def list_shards(root: Storage, dataset: str, split: str | None = None) -> list[str]:
    """URLs of the complete shards of ``dataset`` (those holding at least one row of ``split``
    when given), in shard order."""
    if isinstance(root, str):
        root = Storage(root)
    if split is None:
        return [shard_url(root, dataset, n) for n in complete_shard_numbers(root, dataset)]
    return [shard_url(root, dataset, shard_number(s["shard"]))
            for s in read_shard_stats(root, dataset) if s.get("splits", {}).get(split, 0) > 0]


def _check_schema(schema: pa.Schema, url: str) -> None:
    validate_shard(schema.empty_table(), url)


def read_shard_metadata(url: str) -> dict:
    """The featurizer's metadata of a shard (version, config hash, config, visual weights), read
    from the Parquet footer only; {} for a file written without it."""
    return shard_metadata(read_parquet_schema(url))


def _unreadable(exc: Exception, url: str) -> Exception:
    """What a failed read of shard ``url`` raises: SchemaError naming it when the file is at
    fault (pyarrow's ArrowInvalid or bare OSError: corrupt, truncated; missing; not allowed);
    else ``exc`` itself (a connection that failed, a timeout: not the shard's fault, and a
    flow's task retries them, which it never does for a SchemaError)."""
    if isinstance(exc, (pa.ArrowInvalid, FileNotFoundError, PermissionError)) or type(
            exc) is OSError:
        return SchemaError(f"{url}: not a readable Parquet shard ({exc})")
    return exc


def read_shard(url: str, columns: list[str] | None = None) -> pa.Table:
    """A whole shard as a table cast to SHARD_SCHEMA (metadata kept), or only its ``columns``
    (only those are read and decompressed: the training loader skips the spectrogram, a third
    of a shard's bytes). Raises SchemaError naming ``url`` when the file is not a valid shard."""
    schema = shard_columns(columns)
    reader = ParquetReader(url)  # one footer request for the schema and the read
    try:
        present = reader.schema().names  # a missing column is named by validate_table
        table = reader.read([name for name in schema.names if name in present])
    except (pa.ArrowInvalid, OSError) as exc:
        raise _unreadable(exc, url) from None
    validated = validate_table(table, schema, url)
    return validated.replace_schema_metadata(table.schema.metadata)


def iter_shard_rows(url: str, columns: list[str] | None = None) -> Iterator[dict]:
    """Rows of a shard as dicts, streaming one row group at a time (bounded memory). The file's
    schema is validated first (SchemaError names ``url``)."""
    reader = ParquetReader(url)  # one footer request for the schema and every row group
    try:
        schema = reader.schema()
    except (pa.ArrowInvalid, OSError) as exc:
        raise _unreadable(exc, url) from None
    _check_schema(schema, url)
    wanted = shard_columns(columns or None)
    for group in reader.iter_row_groups(columns=wanted.names):
        yield from group.cast(wanted).to_pylist()


def build_dataset_index(dataset: str, stats: list[dict]) -> dict:
    """The dataset index from the stats of complete shards (see ``write_dataset_index``)."""
    splits: collections.Counter = collections.Counter()
    classes: collections.Counter = collections.Counter()
    shards = []
    for s in stats:
        splits.update(s.get("splits", {}))
        classes.update(s.get("classes", {}))
        shards.append({"name": s["shard"], "file": f"{s['shard']}.parquet", "rows": s["rows"],
                       "failed": len(s.get("failed", [])), "splits": s.get("splits", {})})
    hashes = sorted({s.get("config_hash") for s in stats if s.get("config_hash")})
    weights = sorted({s.get("visual_weights") for s in stats if s.get("visual_weights")})
    return {
        "index_version": INDEX_VERSION,
        "dataset": dataset,
        "featurizer_versions": sorted({s.get("featurizer_version") for s in stats} - {None}),
        "config_hashes": hashes,
        "visual_weights": weights,
        "num_shards": len(shards),
        "rows": sum(s["rows"] for s in stats),
        "failed": sum(len(s.get("failed", [])) for s in stats),
        "splits": dict(sorted(splits.items())),
        "classes": dict(sorted(classes.items())),
        "shards": shards,
        "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_dataset_index(root: Storage, dataset: str) -> dict:
    """Rebuild ``shards/<dataset>/index.json`` from the stats of every complete shard (atomic).
    The file is left untouched when nothing but ``updated_at`` would change."""
    index = build_dataset_index(dataset, read_shard_stats(root, dataset))
    url = index_url(root, dataset)
    try:
        old = json.loads(read_text(url))
    except (FileNotFoundError, json.JSONDecodeError):
        old = None
    if old is not None and {**old, "updated_at": None} == {**index, "updated_at": None}:
        return old
    write_text(url, json.dumps(index, indent=1))
    return index


def read_dataset_index(root: Storage, dataset: str) -> dict:
    """The dataset index (``FileNotFoundError`` naming the URL when featurize has not run)."""
    if isinstance(root, str):
        root = Storage(root)
    url = index_url(root, dataset)
    try:
        return json.loads(read_text(url))
    except FileNotFoundError:
        raise FileNotFoundError(f"{url}: no dataset index (run `ial featurize` first)") from None
