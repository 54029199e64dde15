"""Mix-and-separate: label constraints, gains, determinism, unsupervised duets."""

import pytest
import torch

from ial.method.mixing import (
    ClipBatch, duet_queries, group_distinct_labels, make_mixtures, solo_pair_groups)


def clips(labels, L=500, K=2, C=3, H=2, W=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    B = len(labels)
    return ClipBatch(audio=torch.randn(B, L, generator=g),
                     visual=torch.rand(B, K, C, H, W, generator=g) + 0.1,
                     label=torch.tensor(labels), clip_id=[f"c{i}" for i in range(B)])


@pytest.mark.parametrize("n_mix", [2, 3])
def test_supervised_mixtures(n_mix):
    batch = clips([0, 1, 2, 0, 1, 2, 3, 3, 0])
    mix = make_mixtures(batch, n_mix, "supervised", torch.Generator().manual_seed(0), gain_db=6.0)
    M = mix.mixture.shape[0]
    assert M == 9 // n_mix  # labels allow the maximum number of groups
    assert mix.sources.shape == (M, n_mix, 500) and mix.visual.shape == (M, n_mix, 2, 3, 2, 4)
    assert torch.allclose(mix.mixture, mix.sources.sum(1))
    for m in range(M):
        assert len(set(mix.labels[m].tolist())) == n_mix  # different labels in each mixture
        for s, cid in enumerate(mix.clip_ids[m]):
            i = int(cid[1:])
            assert int(batch.label[i]) == int(mix.labels[m, s])
            assert torch.allclose(mix.sources[m, s], batch.audio[i] * mix.gains[m, s])
            assert torch.equal(mix.visual[m, s], batch.visual[i])
    db = 20 * torch.log10(mix.gains)
    assert float(db.abs().max()) <= 6.0 + 1e-4 and float(db.std()) > 0.5
    assert mix.component_source.tolist() == list(range(n_mix))
    assert torch.equal(mix.query_labels, mix.labels)  # each query shows its source's clip
    used = [c for ids in mix.clip_ids for c in ids]
    assert len(used) == len(set(used))  # no clip twice


def test_deterministic_under_the_generator():
    batch = clips([0, 1, 2, 3, 4, 5, 6, 7])
    a = make_mixtures(batch, 2, "supervised", torch.Generator().manual_seed(5))
    b = make_mixtures(batch, 2, "supervised", torch.Generator().manual_seed(5))
    c = make_mixtures(batch, 2, "supervised", torch.Generator().manual_seed(6))
    assert torch.equal(a.mixture, b.mixture) and a.clip_ids == b.clip_ids
    assert a.clip_ids != c.clip_ids or not torch.equal(a.gains, c.gains)


def test_unsupervised_two_duets_four_components():
    batch = clips([0, 1, 2, 3])
    mix = make_mixtures(batch, 2, "unsupervised", torch.Generator().manual_seed(0))
    assert mix.sources.shape == (2, 2, 500)  # duet-level targets only
    assert mix.visual.shape == (2, 4, 2, 3, 2, 4)  # two queries per duet
    assert mix.component_source.tolist() == [0, 0, 1, 1]
    assert mix.n_components == 4
    i = int(mix.clip_ids[0][0][1:])
    left, right = mix.visual[0, 0], mix.visual[0, 1]
    v = batch.visual[i]
    assert torch.equal(left, v[..., [0, 0, 1, 1]]) and torch.equal(right, v[..., [2, 2, 3, 3]])
    assert mix.query_labels.tolist() == [[-1] * 4] * 2  # a duet video's halves: not known apart


def test_duets_built_from_solo_pairs():
    batch = clips([0, 1, 2, 3, 4, 5, 6, 7, 0])
    mix = make_mixtures(batch, 2, "unsupervised", torch.Generator().manual_seed(0),
                        gain_db=6.0, solo_duets=True)
    assert mix.mixture.shape == (2, 500)  # 4 clips per mixture, the 9th left over
    assert mix.sources.shape == (2, 2, 500) and mix.visual.shape == (2, 4, 2, 3, 2, 4)
    assert mix.component_source.tolist() == [0, 0, 1, 1]
    used = []
    for m in range(2):
        players = [int(c[1:]) for duet in mix.clip_ids[m] for c in duet.split("+")]
        pairs = {tuple(sorted(int(batch.label[i]) for i in players[k:k + 2])) for k in (0, 2)}
        assert len(pairs) == 2 and all(a != b for a, b in pairs)  # two different duets
        for s in range(2):
            a, b = players[2 * s], players[2 * s + 1]
            duet = (batch.audio[a] + batch.audio[b]) * mix.gains[m, s]
            assert torch.allclose(mix.sources[m, s], duet)  # the duet's only target
            assert torch.equal(mix.visual[m, 2 * s], batch.visual[a])  # each player's picture
            assert torch.equal(mix.visual[m, 2 * s + 1], batch.visual[b])
            assert int(mix.labels[m, s]) == int(batch.label[a])
            assert mix.query_labels[m, 2 * s:2 * s + 2].tolist() == [int(batch.label[a]),
                                                                     int(batch.label[b])]
        used += players
    assert len(used) == len(set(used))
    assert torch.allclose(mix.mixture, mix.sources.sum(1))
    with pytest.raises(ValueError, match="unsupervised"):
        make_mixtures(batch, 2, "supervised", torch.Generator().manual_seed(0), solo_duets=True)


def test_solo_pair_duets_use_a_batch_as_fully_as_solo_mixtures_do():
    """Duets need two labels, the duets of a mixture two different label pairs (not four
    labels): random batches of 8 clips of 8 classes give ~2 mixtures, 8 components, as the
    supervised 2-mix gives 4 mixtures of 2; four distinct labels would give ~1.4."""
    g = torch.Generator().manual_seed(0)
    counts = [len(solo_pair_groups(torch.randint(0, 8, (8,), generator=g), 2, g))
              for _ in range(200)]
    assert sum(counts) / len(counts) > 1.9 and min(counts) >= 1
    batch = clips([0, 1, 0, 2, 1, 2, 0, 1])
    groups = solo_pair_groups(batch.label, 2, torch.Generator().manual_seed(1))
    for mixture in groups.tolist():
        pairs = [tuple(sorted(int(batch.label[i]) for i in duet)) for duet in mixture]
        assert all(a != b for a, b in pairs) and pairs[0] != pairs[1]
    # a batch of two classes has one pair only: its duets are mixed anyway, not refused
    two = solo_pair_groups(torch.tensor([0, 2, 0, 2, 0, 2, 0, 2]), 2,
                           torch.Generator().manual_seed(0))
    assert two.shape == (2, 2, 2) and sorted(two.flatten().tolist()) == list(range(8))
    # one class, or too few pairs of two for a mixture: random duets, not a refusal
    one = solo_pair_groups(torch.tensor([1, 1, 1, 1]), 2, torch.Generator())
    assert one.shape == (1, 2, 2) and sorted(one.flatten().tolist()) == [0, 1, 2, 3]
    lopsided = solo_pair_groups(torch.tensor([0, 0, 0, 0, 0, 1]), 2, torch.Generator())
    assert lopsided.shape == (1, 2, 2) and len(set(lopsided.flatten().tolist())) == 4


def test_duet_queries_odd_width_share_centre():
    q = duet_queries(torch.arange(5.0).view(1, 1, 1, 1, 5))
    assert q[0, 0, 0, 0, 0].tolist() == [0, 0, 1, 1, 2]
    assert q[0, 1, 0, 0, 0].tolist() == [2, 2, 3, 3, 4]


def test_a_batch_of_one_class_is_mixed_anyway():
    """Labels differ within a mixture where the batch allows; a batch of one class (or two
    classes for three sources) still gives mixtures: one such batch must not stop a run."""
    mix = make_mixtures(clips([4, 4, 4, 4, 4]), 2, "supervised", torch.Generator().manual_seed(0))
    assert mix.mixture.shape == (2, 500) and mix.labels.tolist() == [[4, 4], [4, 4]]
    ids = [c for group in mix.clip_ids for c in group]
    assert len(set(ids)) == 4  # four different clips, the fifth left over
    three = make_mixtures(clips([0, 1, 0, 1, 0, 1]), 3, "supervised", torch.Generator())
    assert three.mixture.shape == (2, 500)
    # with enough labels the rule is unchanged: no label twice in a mixture
    mixed = make_mixtures(clips([0, 1, 1, 1]), 2, "supervised", torch.Generator().manual_seed(0))
    assert mixed.labels.tolist() == [[0, 1]] or mixed.labels.tolist() == [[1, 0]]


def test_errors():
    with pytest.raises(ValueError, match="a mixture needs 2 clips, the batch has 1"):
        make_mixtures(clips([4]), 2, "supervised", torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="a mixture needs 4 clips, the batch has 3"):
        make_mixtures(clips([0, 1, 2]), 2, "unsupervised", torch.Generator(), solo_duets=True)
    with pytest.raises(ValueError, match="mode"):
        make_mixtures(clips([0, 1]), 2, "semi", torch.Generator().manual_seed(0))


def test_grouping_never_repeats_a_label_in_a_group():
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        labels = torch.randint(0, 4, (12,), generator=g)
        for group in group_distinct_labels(labels, 3, g):
            assert len({int(labels[i]) for i in group}) == 3
