"""The streaming shard loader: coverage across ranks × workers, determinism, exact resume."""

from __future__ import annotations

import pytest

from ial.data.loader import (LoaderPosition, ShardStream, batch_layout, list_dataset_shards,
                             scan_split, split_train_val)
from ial.data.synthetic import CLASSES
from ial.data.synthetic import write_synthetic_shards as write_shards


def _epoch_clips(shards, classes, *, rank, world_size, workers, epoch=0, start=0, batch_size=2,
                 drop_last=False):
    stream = ShardStream(shards, classes, seed=7, rank=rank, world_size=world_size,
                         batch_size=batch_size, num_workers=workers, drop_last=drop_last,
                         segment_samples=1024)
    dataset = stream.epoch(epoch, start)
    return [(b.index, b.clip_id) for b in stream.loader(dataset)]


def test_every_clip_of_an_epoch_seen_once_across_2_ranks_x_2_workers(tmp_path):
    ids = write_shards(str(tmp_path), shards=3, rows=9, splits=("train",))  # 27 clips, all train
    shards, classes = scan_split(list_dataset_shards(str(tmp_path), "toy"), "train")
    assert classes == CLASSES
    for epoch in (0, 1):
        seen = []
        for rank in range(2):
            batches = _epoch_clips(shards, classes, rank=rank, world_size=2, workers=2, epoch=epoch)
            assert [i for i, _ in batches] == list(range(len(batches)))  # logical order
            seen += [c for _, ids_ in batches for c in ids_]
        assert sorted(seen) == sorted(ids)  # exactly once: no clip missing, none twice
    # the order changes between epochs, and depends only on (seed, epoch)
    e0 = _epoch_clips(shards, classes, rank=0, world_size=2, workers=2, epoch=0)
    assert e0 == _epoch_clips(shards, classes, rank=0, world_size=2, workers=2, epoch=0)
    assert e0 != _epoch_clips(shards, classes, rank=0, world_size=2, workers=2, epoch=1)


def test_split_comes_from_the_data(tmp_path):
    ids = write_shards(str(tmp_path), shards=2, rows=8)
    urls = list_dataset_shards(str(tmp_path), "toy")
    val, _ = scan_split(urls, "val")
    got = _epoch_clips(val, CLASSES, rank=0, world_size=1, workers=0, batch_size=1)
    assert sorted(c for _, b in got for c in b) == sorted(ids[3::4])


@pytest.mark.parametrize("start", [1, 2, 3, 5])
def test_resume_mid_epoch_continues_the_same_order(tmp_path, start):
    write_shards(str(tmp_path), shards=3, rows=7, splits=("train",))  # 21 clips: uneven workers
    shards, classes = scan_split(list_dataset_shards(str(tmp_path), "toy"), "train")
    full = _epoch_clips(shards, classes, rank=1, world_size=2, workers=2)
    resumed = _epoch_clips(shards, classes, rank=1, world_size=2, workers=2, start=start)
    assert resumed == full[start:]


def test_stream_position_runs_across_epochs(tmp_path):
    write_shards(str(tmp_path), shards=2, rows=4, splits=("train",))  # 8 clips
    shards, classes = scan_split(list_dataset_shards(str(tmp_path), "toy"), "train")
    stream = ShardStream(shards, classes, seed=1, rank=0, world_size=1, batch_size=3,
                         num_workers=0, segment_samples=512)
    it = stream.batches(LoaderPosition(epoch=0, batches=1))
    got = [(b.epoch, b.index) for b in (next(it) for _ in range(3))]
    assert got == [(0, 1), (1, 0), (1, 1)]  # 8 // 3 = 2 batches per epoch (drop_last)
    assert stream.position == LoaderPosition(1, 2)
    batch = next(it)
    assert batch.audio.shape == (3, 512) and batch.visual.shape == (3, 1, 8, 2, 2)
    assert batch.label.dtype.is_floating_point is False


def test_a_batch_larger_than_a_rank_s_share_of_the_split_names_batch_size(tmp_path):
    from ial.errors import ConfigError

    write_shards(str(tmp_path), shards=2, rows=4, splits=("train",))  # 8 clips
    shards, classes = scan_split(list_dataset_shards(str(tmp_path), "toy"), "train")
    stream = ShardStream(shards, classes, seed=1, rank=0, world_size=2, batch_size=5,
                         num_workers=0, segment_samples=512)
    with pytest.raises(ConfigError, match=r"^config field 'batch_size': 5 clips per batch, but "
                                          r"the split's 8 clips across 2 rank\(s\)"):
        next(stream.batches())


def test_batch_layout_gives_each_worker_contiguous_blocks():
    layout = batch_layout(11, 2, 2, drop_last=False)  # 6 batches, last has 1 clip
    assert layout == [[(0, 2), (2, 4), (4, 6)], [(6, 8), (8, 10), (10, 11)]]
    assert batch_layout(11, 2, 2, drop_last=True) == [[(0, 2), (2, 4), (4, 6)], [(6, 8), (8, 10)]]


def test_validation_is_carved_from_train_by_video_when_the_data_has_none(tmp_path):
    from preprocessing.clip_index import hash_fraction, video_id_of

    ids = write_shards(str(tmp_path), shards=3, rows=20, splits=("train", "train", "test"))
    urls = list_dataset_shards(str(tmp_path), "toy")
    rows = split_train_val(urls, val_fraction=0.25)
    val = {ids[i] for s in rows.val for i in _global(s, urls)}
    train = {ids[i] for s in rows.train for i in _global(s, urls)}
    test = {c for k, c in enumerate(ids) if k % 3 == 2}
    assert val and train and not (val & train) and not (val | train) & test  # never test rows
    assert all(hash_fraction(video_id_of(c)) < 0.25 for c in val)
    assert all(hash_fraction(video_id_of(c)) >= 0.25 for c in train)
    assert (rows.carved_clips, rows.val_fraction) == (len(val), 0.25)
    assert split_train_val(urls, 0.25).val == rows.val  # deterministic
    assert split_train_val(urls, 0.0).val == []  # 0: no validation
    # data with its own val rows keeps them, nothing is carved
    other = tmp_path / "withval"
    write_shards(str(other), shards=2, rows=8, splits=("train", "val"))
    own = split_train_val(list_dataset_shards(str(other), "toy"), 0.25)
    assert own.carved_clips == 0 and own.val_fraction == 0.0
    assert sum(len(s.rows) for s in own.val) == 8


def _global(shard_rows, urls, rows_per_shard=20):
    return [urls.index(shard_rows.url) * rows_per_shard + r for r in shard_rows.rows]


def test_frames_mode_yields_normalised_frames_for_a_trainable_trunk(tmp_path):
    write_shards(str(tmp_path), shards=1, rows=4, splits=("train",), frame_size=32,
                 feature_shape=(2, 8, 2, 2))
    shards, classes = scan_split(list_dataset_shards(str(tmp_path), "toy"), "train")
    stream = ShardStream(shards, classes, seed=0, rank=0, world_size=1, batch_size=4,
                         segment_samples=1024, visual_input="frames")
    batch = next(stream.batches())
    assert batch.visual.shape == (4, 2, 3, 32, 32) and batch.visual.dtype.is_floating_point
    assert abs(float(batch.visual.mean())) < 3  # ImageNet-normalised, not 0..255
    features = next(ShardStream(shards, classes, seed=0, rank=0, world_size=1, batch_size=4,
                                segment_samples=1024).batches())
    assert features.visual.shape == (4, 2, 8, 2, 2)
