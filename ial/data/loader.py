"""Streaming loader over Parquet feature shards, split across ranks × loader workers.

Never holds more than one shard per worker in memory. The epoch's order is a pure function of
``(seed, epoch)`` and the layout ``(world_size, num_workers, batch_size)``, which makes the loader
position ``(epoch, batches consumed in the epoch)`` enough to resume exactly.

How one epoch is laid out (for one data split, e.g. ``train``):

1. ``scan_split`` reads only the ``split``/``label`` columns of every shard once, giving each
   shard's row indices of the split (the train/val split comes from the data, never from chance).
2. The shard order is shuffled with ``seed, epoch``; inside each shard the rows are shuffled too.
   Concatenated, this is the epoch's global clip sequence ``G`` (n clips).
3. Rank ``r`` of ``R`` takes the contiguous slice ``G[r*n//R : (r+1)*n//R]`` — the ranks read
   disjoint clips and (except at slice borders) disjoint shards.
4. The rank's slice is cut into batches; logical batch ``j`` belongs to logical worker ``j % W`` and
   every worker's batches are one contiguous block of the slice (so each worker streams a few
   shards, one at a time). PyTorch's DataLoader hands out worker results round-robin, so the
   batches arrive in logical order ``j = 0, 1, 2, ...``.
5. Resuming at batch ``N`` of an epoch: physical worker ``p`` plays logical worker ``(p + N) % W``
   and skips the batches of it that were already consumed, so the DataLoader's first batch is
   logical batch ``N`` and the order continues unchanged.

Each batch crops a ``segment_samples`` window of every clip (random offset from
``seed, epoch, clip`` for training, offset 0 for validation); training windows may be played at
a random speed first (``speed_factors``, ``ial.data.speed``), drawn from the same seed. Mixing
happens in the training loop (``ial.method.mixing.make_mixtures``), so the same clips are mixed
differently every epoch.

Exact resume assumes the same world size, ``num_workers`` and ``batch_size`` as the run that saved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ial.data.speed import change_speed, draw_factor, input_length
from ial.errors import ConfigError
from ial.signal import SEGMENT_SAMPLES
from preprocessing.shard_schema import decode_row


@dataclass(frozen=True)
class ShardRows:
    """One shard and the indices of its rows that belong to the wanted split."""

    url: str
    rows: tuple[int, ...]


@dataclass
class LoaderBatch:
    """A batch of clips, and where it sits in the stream.

    audio: (B, L) float32 samples @ 11025 Hz (L = segment_samples); visual: (B, K, C, H, W)
    frame features; label: (B,) int64 class indices; clip_id: B strings.
    epoch / index: the epoch and the batch's index within this rank's epoch order.
    """

    audio: torch.Tensor
    visual: torch.Tensor
    label: torch.Tensor
    clip_id: list[str]
    epoch: int
    index: int

    def clips(self):
        """The batch as the ``ial.method.mixing.ClipBatch`` that ``make_mixtures`` takes."""
        from ial.method.mixing import ClipBatch

        return ClipBatch(self.audio, self.visual, self.label, list(self.clip_id))


@dataclass
class LoaderPosition:
    """Where a rank's stream stands: ``batches`` of ``epoch`` were consumed."""

    epoch: int = 0
    batches: int = 0


@dataclass
class TrainValRows:
    """The rows a run trains and validates on (``split_train_val``).

    ``carved``: when the shards have no ``val`` rows, how many ``train`` clips (of how many
    videos) were set aside as validation by the hash of their video id (else 0)."""

    train: list[ShardRows]
    val: list[ShardRows]
    classes: list[str]
    val_fraction: float
    carved_clips: int = 0
    carved_videos: int = 0


def split_train_val(shard_urls: list[str], val_fraction: float = 0.0) -> TrainValRows:
    """Train and val rows of the shards (reads only the ``clip_id``/``split``/``label`` columns).

    The data's own ``val`` rows when it has any. Otherwise (VGGSound/AudioSet manifests have only
    train/test), every ``train`` clip whose video id hashes below ``val_fraction``
    (``preprocessing.clip_index.hash_fraction``: deterministic, all clips of a video on one
    side, stable as the data grows) is validation instead; ``test`` rows are never used.
    """
    from preprocessing.clip_index import hash_fraction, video_id_of
    from preprocessing.shards import iter_shard_rows

    rows: list[tuple[str, list[dict]]] = []
    labels: set[str] = set()
    for url in shard_urls:
        part = list(iter_shard_rows(url, columns=["clip_id", "split", "label"]))
        labels.update(r["label"] for r in part if r["label"] is not None)
        rows.append((url, part))
    has_val = any(r["split"] == "val" for _, part in rows for r in part)
    carve = not has_val and val_fraction > 0
    train, val, carved, videos = [], [], 0, set()
    for url, part in rows:
        t_idx, v_idx = [], []
        for i, r in enumerate(part):
            if r["split"] == "val":
                v_idx.append(i)
            elif r["split"] == "train":
                vid = video_id_of(r["clip_id"])
                if carve and hash_fraction(vid) < val_fraction:
                    v_idx.append(i)
                    carved += 1
                    videos.add(vid)
                else:
                    t_idx.append(i)
        if t_idx:
            train.append(ShardRows(url, tuple(t_idx)))
        if v_idx:
            val.append(ShardRows(url, tuple(v_idx)))
    return TrainValRows(train, val, sorted(labels), val_fraction if carve else 0.0, carved,
                        len(videos))


def scan_split(shard_urls: list[str], split: str) -> tuple[list[ShardRows], list[str]]:
    """Rows of ``split`` in each shard, and all class labels (sorted) seen in any split.

    Reads only the ``split`` and ``label`` columns (the Parquet column chunks), never the audio.
    """
    from preprocessing.shards import iter_shard_rows

    shards, labels = [], set()
    for url in shard_urls:
        rows = []
        for i, row in enumerate(iter_shard_rows(url, columns=["split", "label"])):
            if row["label"] is not None:
                labels.add(row["label"])
            if row["split"] == split:
                rows.append(i)
        if rows:
            shards.append(ShardRows(url, tuple(rows)))
    return shards, sorted(labels)


def epoch_sequence(shards: list[ShardRows], seed: int, epoch: int, shuffle: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The epoch's global clip order ``G`` as (shard position, row index) arrays of length n."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(shards)) if shuffle else np.arange(len(shards))
    shard_pos, rows = [], []
    for pos in order:
        r = np.asarray(shards[pos].rows, dtype=np.int64)
        if shuffle:
            r = r[rng.permutation(len(r))]
        shard_pos.append(np.full(len(r), pos, dtype=np.int64))
        rows.append(r)
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(shard_pos), np.concatenate(rows)


def rank_slice(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, end) of rank's contiguous share of n clips (sizes differ by at most one)."""
    return rank * n // world_size, (rank + 1) * n // world_size


def batch_layout(n: int, batch_size: int, num_workers: int, drop_last: bool
                 ) -> list[list[tuple[int, int]]]:
    """Per logical worker, its batches as [start, end) positions in the rank's slice.

    Logical batch j is worker ``j % W``'s batch ``j // W``; each worker's batches are contiguous.
    """
    W = max(1, num_workers)
    nb = n // batch_size if drop_last else math.ceil(n / batch_size)
    sizes = [batch_size] * nb
    if not drop_last and nb and n % batch_size:
        sizes[-1] = n % batch_size
    per_worker: list[list[tuple[int, int]]] = []
    start = 0
    for w in range(W):
        batches = []
        for j in range(w, nb, W):
            batches.append((start, start + sizes[j]))
            start += sizes[j]
        per_worker.append(batches)
    return per_worker


def resume_role(physical: int, num_workers: int, start_batch: int) -> tuple[int, int]:
    """(logical worker, batches of it to skip) for a physical worker when resuming at batch N."""
    W = max(1, num_workers)
    logical = (physical + start_batch) % W
    skip = max(0, math.ceil((start_batch - logical) / W))
    return logical, skip


class ShardEpoch(IterableDataset):
    """One epoch of one rank as an iterable of ``LoaderBatch`` (use with ``batch_size=None``)."""

    def __init__(self, shards: list[ShardRows], classes: list[str], *, epoch: int, seed: int,
                 rank: int, world_size: int, batch_size: int, num_workers: int,
                 start_batch: int = 0, train: bool = True, drop_last: bool = True,
                 segment_samples: int = SEGMENT_SAMPLES, visual_input: str = "features",
                 speed_factors: tuple[float, ...] = ()):
        self.shards, self.class_index = shards, {c: i for i, c in enumerate(classes)}
        self.visual_input, self.speed_factors = visual_input, tuple(speed_factors)
        self.epoch, self.seed, self.train = epoch, seed, train
        self.num_workers, self.start_batch = num_workers, start_batch
        self.segment_samples = segment_samples
        shard_pos, rows = epoch_sequence(shards, seed, epoch, shuffle=train)
        lo, hi = rank_slice(len(rows), rank, world_size)
        self.shard_pos, self.rows = shard_pos[lo:hi], rows[lo:hi]
        self.layout = batch_layout(hi - lo, batch_size, num_workers, drop_last)
        self.num_batches = sum(len(b) for b in self.layout)

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start_batch)

    def __iter__(self) -> Iterator[LoaderBatch]:
        info = get_worker_info()
        physical = info.id if info is not None else 0
        if info is not None and info.num_workers != max(1, self.num_workers):
            raise RuntimeError(f"ShardEpoch laid out for {self.num_workers} workers, "
                               f"DataLoader has {info.num_workers}")
        W = max(1, self.num_workers)
        logical, skip = resume_role(physical, W, self.start_batch)
        cache: dict[int, object] = {}
        for k, (start, end) in enumerate(self.layout[logical]):
            if k < skip:
                continue
            clips = [self._clip(i, cache) for i in range(start, end)]
            yield self._collate(clips, index=logical + k * W)

    def _clip(self, i: int, cache: dict):
        pos = int(self.shard_pos[i])
        if pos not in cache:  # one shard in memory per worker at a time
            cache.clear()
            cache[pos] = _read_table(self.shards[pos].url, self.visual_input)
        row = cache[pos].slice(int(self.rows[i]), 1).to_pylist()[0]
        return decode_row(row), pos

    def _collate(self, clips: list, index: int) -> LoaderBatch:
        L = self.segment_samples
        audio = np.zeros((len(clips), L), dtype=np.float32)
        for b, (clip, pos) in enumerate(clips):
            wave = clip.audio
            factor, need, offset = 1.0, L, 0
            if self.train:
                rng = np.random.default_rng(
                    [self.seed, self.epoch, pos, _stable_hash(clip.clip_id)])
                factor = draw_factor(rng, self.speed_factors)
                need = input_length(L, factor)
                if wave.shape[0] > need:
                    offset = int(rng.integers(0, wave.shape[0] - need + 1))
            piece = change_speed(wave[offset:offset + need], factor)[:L]
            audio[b, :piece.shape[0]] = piece
        visual = np.stack([visual_of(clip, self.visual_input) for clip, _ in clips])
        labels = [self.class_index.get(clip.label, -1) for clip, _ in clips]
        return LoaderBatch(
            audio=torch.from_numpy(audio), visual=torch.from_numpy(visual),
            label=torch.tensor(labels, dtype=torch.int64),
            clip_id=[clip.clip_id for clip, _ in clips], epoch=self.epoch, index=index,
        )


def visual_of(clip, visual_input: str) -> np.ndarray:
    """What the separator takes as one clip's visual input: its stored frame features
    ("features", (K, C, H, W)) or its stored frames, decoded and ImageNet-normalised for a
    trainable trunk ("frames", (K, 3, S, S)). float32."""
    if visual_input == "frames":
        from ial.models.resnet18 import imagenet_normalize

        return imagenet_normalize(clip.pixels()).numpy()
    return clip.frame_features.astype(np.float32)


def _read_table(url: str, visual_input: str):
    """The columns of a shard that training uses (``LOADER_COLUMNS``; + the JPEG frames for
    ``visual_input`` "frames")."""
    from preprocessing.shard_schema import LOADER_COLUMNS
    from preprocessing.shards import read_shard

    return read_shard(url, LOADER_COLUMNS + (["frames"] if visual_input == "frames" else []))


def list_dataset_shards(root, dataset: str) -> list[str]:
    """Complete shard URLs of a dataset (``preprocessing.shards.list_shards``)."""
    from preprocessing.shards import list_shards

    return list_shards(root, dataset)


def _stable_hash(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())


class ShardStream:
    """A rank's endless stream of batches over epochs, resumable from a ``LoaderPosition``.

    ``shards``/``classes`` come from ``scan_split``; ``rank``/``world_size`` from the process group.
    """

    def __init__(self, shards: list[ShardRows], classes: list[str], *, seed: int, rank: int,
                 world_size: int, batch_size: int, num_workers: int = 0, train: bool = True,
                 drop_last: bool = True, segment_samples: int = SEGMENT_SAMPLES,
                 visual_input: str = "features", speed_factors: tuple[float, ...] = ()):
        self.shards, self.classes = shards, classes
        self.kw = dict(seed=seed, rank=rank, world_size=world_size, batch_size=batch_size,
                       num_workers=num_workers, train=train, drop_last=drop_last,
                       segment_samples=segment_samples, visual_input=visual_input,
                       speed_factors=speed_factors)
        self.num_workers = num_workers
        self.position = LoaderPosition()

    def epoch(self, epoch: int, start_batch: int = 0) -> ShardEpoch:
        return ShardEpoch(self.shards, self.classes, epoch=epoch, start_batch=start_batch,
                          **self.kw)

    def loader(self, dataset: ShardEpoch) -> DataLoader:
        # Its own generator: a DataLoader iterator otherwise draws its base seed from the global
        # torch RNG, and a resumed run (which opens one more iterator) would drift from the
        # uninterrupted one. The loader itself needs no torch randomness.
        # Workers start from a forkserver and end with this process (ial.data.workers).
        from ial.data.workers import worker_context, worker_init_for_this_process

        return DataLoader(dataset, batch_size=None, num_workers=self.num_workers,
                          worker_init_fn=worker_init_for_this_process() if self.num_workers
                          else None,
                          multiprocessing_context=worker_context() if self.num_workers else None,
                          persistent_workers=False, generator=torch.Generator().manual_seed(0))

    def batches(self, position: LoaderPosition | None = None) -> Iterator[LoaderBatch]:
        """Batches forever from ``position``; ``self.position`` is updated after each batch."""
        self.position = LoaderPosition(**vars(position)) if position else LoaderPosition()
        empty_epochs = 0
        while True:
            dataset = self.epoch(self.position.epoch, self.position.batches)
            if dataset.num_batches == 0:
                empty_epochs += 1
                if empty_epochs > 1:
                    clips = sum(len(s.rows) for s in self.shards)
                    raise ConfigError("batch_size", f"{self.kw['batch_size']} clips per batch, "
                                      f"but the split's {clips} clips across "
                                      f"{self.kw['world_size']} rank(s) give this rank no full "
                                      "batch: lower batch_size or use fewer ranks")
            else:
                empty_epochs = 0
            for batch in self.loader(dataset):
                self.position = LoaderPosition(batch.epoch, batch.index + 1)
                yield batch
            self.position = LoaderPosition(self.position.epoch + 1, 0)
