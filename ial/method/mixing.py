"""Mix-and-separate: build training mixtures from a batch of clips.

- supervised (``n_mix`` = 2 or 3): solo clips with DIFFERENT labels are grouped, each scaled by a
  random gain, and summed in the waveform domain; the targets are the scaled clips; each source's
  visual query is its clip's frame features.
- unsupervised: every input clip is a duet video (two sounding objects, one audio track). Two
  duets with different labels are summed (random gains) → the separator is asked for four
  components, two per duet, and only duet-level targets exist: the loss compares each duet's audio
  with the SUM of its two components (``component_source`` says which target each component
  belongs to). The two visual queries of a duet are the left half and the right half of its
  frame-feature map, each stretched back to the full width ("left player", "right player") —
  our choice: the authors use two object-detector crops per duet, which the shards do not
  carry; players of a duet usually stand side by side, and a stretched half keeps the
  (K, C, H, W) shape of the supervised case, like a crop resized to the input size. With odd W
  the centre column belongs to both halves.
- unsupervised, duets built from solo pairs (``solo_duets``, for corpora of solo clips): each duet
  is two solo clips of different labels summed, and the duets of a mixture have different label
  pairs (as real duets of different labels: "flute violin" + "cello violin" may mix); its target
  is that sum (one gain per duet), and each player's query is its own clip's frame features, as a
  detector crop of one player would be.

A batch with fewer different labels (or label pairs) than a mixture needs, a batch of one class
say, is mixed anyway, labels repeating (``groups_of``): one such batch would otherwise stop a
training run (seen with duets, whose pairs are fewer than the labels). Only a batch with fewer
clips than one mixture needs is refused.

Deterministic: every random choice draws from the ``generator`` argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

MODES = ("supervised", "unsupervised")


@dataclass
class ClipBatch:
    """A batch of clips as the training loader yields it.

    audio: (B, L) float32 samples @ 11025 Hz; visual: (B, K, C, H, W) frame features;
    label: (B,) int64 class ids; clip_id: B strings.
    """

    audio: torch.Tensor
    visual: torch.Tensor
    label: torch.Tensor
    clip_id: list[str]


@dataclass
class MixBatch:
    """Mixtures ready for the separator.

    mixture: (M, L) samples; sources: (M, S, L) targets (S = n_mix supervised, 2 duets
    unsupervised); visual: (M, N, K, C, H, W) one query per component (N = S supervised, 2·S
    unsupervised); labels: (M, S) int64 class id per target (a duet of solo pairs: its first
    player's); component_source: (N,) int64 target index of each component; gains: (M, S) linear
    gains applied; query_labels: (M, N) int64 class id of the clip each visual query shows (a
    duet of solo pairs: each player's own; −1 for the halves of a duet video, whose players'
    classes are not known apart); clip_ids: M lists of S ids (a duet of solo pairs:
    "<id>+<id>").
    """

    mixture: torch.Tensor
    sources: torch.Tensor
    visual: torch.Tensor
    mode: str
    labels: torch.Tensor
    component_source: torch.Tensor
    gains: torch.Tensor
    query_labels: torch.Tensor
    clip_ids: list[list[str]] = field(default_factory=list)

    @property
    def n_components(self) -> int:
        return self.visual.shape[1]

    def to(self, device: torch.device | str) -> "MixBatch":
        """A copy with every tensor on ``device``."""
        return MixBatch(self.mixture.to(device), self.sources.to(device), self.visual.to(device),
                        self.mode, self.labels.to(device), self.component_source.to(device),
                        self.gains.to(device), self.query_labels.to(device), self.clip_ids)


def group_distinct_labels(labels: torch.Tensor, n: int,
                          generator: torch.Generator) -> list[list[int]]:
    """Random groups of ``n`` indices whose labels differ within a group, as many as possible.

    Clips are shuffled into per-label queues; each group takes one clip from each of the ``n``
    labels with the most clips left (ties broken by a random per-label priority), which forms
    the maximum number of groups. Member order and group order are shuffled.
    Shape: labels (B,) → groups of indices.
    """
    order = torch.randperm(labels.shape[0], generator=generator).tolist()
    queues: dict[int, list[int]] = {}
    for i in order:
        queues.setdefault(int(labels[i]), []).append(i)
    names = list(queues)
    priority = dict(zip(names, torch.randperm(len(names), generator=generator).tolist()))
    groups: list[list[int]] = []
    while sum(1 for q in queues.values() if q) >= n:
        chosen = sorted((k for k in names if queues[k]),
                        key=lambda k: (-len(queues[k]), priority[k]))[:n]
        group = [queues[k].pop() for k in chosen]
        perm = torch.randperm(n, generator=generator).tolist()
        groups.append([group[j] for j in perm])
    perm = torch.randperm(len(groups), generator=generator).tolist()
    return [groups[j] for j in perm]


def groups_of(labels: torch.Tensor, n: int, generator: torch.Generator,
              at_least: int = 1) -> list[list[int]]:
    """``group_distinct_labels``, or, when it forms fewer than ``at_least`` groups of ``n``
    different labels, random groups of ``n`` indices whose labels may repeat (as many as the
    batch holds).

    Shape: labels (B,) → groups of indices.
    """
    groups = group_distinct_labels(labels, n, generator)
    if len(groups) < at_least:
        order = torch.randperm(labels.shape[0], generator=generator).tolist()
        groups = [order[i:i + n] for i in range(0, len(order) - n + 1, n)]
    return groups


def duet_queries(visual: torch.Tensor) -> torch.Tensor:
    """Two object queries from a duet's frame features: its left half and its right half, each
    stretched back to the full width (nearest neighbour), like a detector crop resized to the
    input size. With odd W the centre column belongs to both halves.

    Shape: (..., K, C, H, W) → (..., 2, K, C, H, W).
    """
    W = visual.shape[-1]
    half = (W + 1) // 2
    stretch = (torch.arange(W, device=visual.device) * half) // W  # source column in the half
    left = visual.index_select(-1, stretch)
    right = visual.index_select(-1, stretch + (W - half))
    return torch.stack([left, right], dim=-5)


def solo_pair_groups(labels: torch.Tensor, n_mix: int, generator: torch.Generator
                     ) -> torch.Tensor:
    """Mixtures of ``n_mix`` duets built from solo clips: clips paired into duets of two
    different labels, then duets grouped so that a mixture's duets have different label pairs
    (``groups_of`` at both levels: a batch of two classes, whose duets all have one pair, is
    mixed anyway).

    Shape: labels (B,) → indices (M, n_mix, 2): mixture, duet, player.
    """
    duets = groups_of(labels, 2, generator, at_least=n_mix)  # enough for one mixture
    keys: dict[tuple[int, int], int] = {}
    duet_key = [keys.setdefault(tuple(sorted(int(labels[i]) for i in d)), len(keys))
                for d in duets]
    groups = groups_of(torch.tensor(duet_key, dtype=torch.long), n_mix, generator)
    return torch.tensor([[duets[d] for d in g] for g in groups],
                        dtype=torch.long).view(-1, n_mix, 2)


def make_mixtures(clips: ClipBatch, n_mix: int, mode: str, generator: torch.Generator,
                  gain_db: float = 6.0, solo_duets: bool = False) -> MixBatch:
    """Mix clips (see the module docstring).

    ``n_mix``: sources per mixture (supervised: 2 or 3 solo clips; unsupervised: 2 duets).
    ``gain_db``: each source is scaled by 10^(g/20), g uniform in [−gain_db, gain_db] (our
    choice; the released code mixes at unit gain, random gains make the separator robust to
    relative loudness). ``solo_duets`` (unsupervised only): each duet is two solo clips summed;
    a duet's label is then its first player's. Labels differ within a mixture where the batch
    allows (``groups_of``). Raises ValueError when the batch has fewer clips than one mixture
    needs.

    Shape: clips.audio (B, L) → mixture (M, L), M ≤ B // n_mix (B // (2·n_mix) with solo_duets).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if n_mix < 2:
        raise ValueError(f"n_mix must be at least 2, got {n_mix}")
    if solo_duets and mode != "unsupervised":
        raise ValueError("solo_duets builds the duets of unsupervised mode")
    idx = (solo_pair_groups(clips.label, n_mix, generator) if solo_duets else
           torch.tensor(groups_of(clips.label, n_mix, generator),
                        dtype=torch.long).view(-1, n_mix, 1))  # (M, S, P) clips per source
    if idx.shape[0] == 0:
        need = 2 * n_mix if solo_duets else n_mix
        raise ValueError(f"a mixture needs {need} clips, the batch has {clips.label.shape[0]} "
                         f"(labels {clips.label.tolist()})")
    M, S = idx.shape[:2]
    db = (torch.rand(M, S, generator=generator) * 2 - 1) * gain_db
    gains = (10.0 ** (db / 20.0)).to(clips.audio.dtype)
    members = clips.audio[idx.to(clips.audio.device)]  # (M, S, P, L)
    sources = members.sum(dim=2) * gains.to(clips.audio.device)[..., None]
    visual = clips.visual[idx.to(clips.visual.device)]  # (M, S, P, K, C, H, W)
    labels = clips.label[idx.to(clips.label.device)]  # (M, S, P)
    if solo_duets:
        visual = visual.flatten(1, 2)  # (M, 2S, K, C, H, W): each player's own picture
        query_labels = labels.flatten(1, 2)  # (M, 2S): each player's own class
    elif mode == "unsupervised":
        visual = duet_queries(visual[:, :, 0]).flatten(1, 2)  # (M, 2S, K, C, H, W)
        query_labels = labels.new_full((M, 2 * S), -1)  # the halves' classes are not known
    else:
        visual = visual[:, :, 0]  # (M, S, K, C, H, W)
        query_labels = labels[..., 0]  # (M, S)
    component_source = torch.arange(S)
    if mode == "unsupervised":
        component_source = component_source.repeat_interleave(2)
    return MixBatch(
        mixture=sources.sum(dim=1), sources=sources, visual=visual, mode=mode,
        labels=labels[..., 0], component_source=component_source, gains=gains,
        query_labels=query_labels,
        clip_ids=[["+".join(clips.clip_id[i] for i in duet) for duet in group]
                  for group in idx.tolist()])
