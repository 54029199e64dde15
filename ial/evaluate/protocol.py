"""The MUSIC-style evaluation protocol: a deterministic list of test mixtures.

Sound of Pixels / IAL evaluate on synthetic mixtures of test clips of *distinct* classes:

1. the clips of the evaluated split (``test``) are grouped by class (their ``label``);
2. every combination of ``mix`` distinct classes is taken (all pairs for 2-mix, all triplets for
   3-mix), classes in sorted order (so source ``i`` of a mixture is the i-th class name);
3. for each combination ``c`` (0-based, in ``itertools.combinations`` order), ``n`` mixtures
   draw one clip per class with ``numpy.random.default_rng([seed, c])``; the ``n`` draws are
   distinct clip tuples when the classes have enough clips (else every tuple once);
4. optionally, a seeded subset of ``max_mixtures`` mixtures is kept (in list order).

Same clips + same seed ⇒ the same list, whatever the shard layout or the machine. Full 10 s
clips are mixed as in training (``ial.method.mixing``, without its random gains): ``reference_i =
clip_i`` and ``mixture = Σ_i reference_i`` in float32 (no clipping; the references are exactly
what the mixture is made of). Sound of Pixels divided by N; the metrics are scale-invariant, only
the model's input level would differ.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ial.errors import UserError


class ProtocolError(UserError, ValueError):
    """The data cannot give the requested protocol (e.g. fewer classes than ``mix``)."""


@dataclass(frozen=True)
class MixtureSpec:
    """One test mixture: clip ids of its sources, in source order, and their classes."""

    index: int
    clip_ids: tuple[str, ...]
    labels: tuple[str, ...]


def build_mixtures(
    clips_by_class: dict[str, list[str]],
    mix: int = 2,
    n_per_combination: int = 10,
    seed: int = 1234,
    max_mixtures: int | None = None,
) -> list[MixtureSpec]:
    """The protocol's mixtures (see the module docstring). ``clips_by_class``: label → clip ids."""
    classes = sorted(c for c, ids in clips_by_class.items() if ids)
    if len(classes) < mix:
        raise ProtocolError(f"{mix}-source mixtures of distinct classes need at least {mix} "
                            f"classes with clips; the data has {len(classes)}: {classes}")
    pools = {c: sorted(set(clips_by_class[c])) for c in classes}
    specs: list[MixtureSpec] = []
    for c_index, combo in enumerate(itertools.combinations(classes, mix)):
        sizes = [len(pools[c]) for c in combo]
        total = math.prod(sizes)
        if total <= n_per_combination:
            draws = list(itertools.product(*[range(s) for s in sizes]))
        else:
            rng = np.random.default_rng([seed, c_index])
            seen: set[tuple[int, ...]] = set()
            draws = []
            while len(draws) < n_per_combination:
                draw = tuple(int(rng.integers(s)) for s in sizes)
                if draw not in seen:
                    seen.add(draw)
                    draws.append(draw)
        for draw in draws:
            ids = tuple(pools[c][i] for c, i in zip(combo, draw))
            specs.append(MixtureSpec(len(specs), ids, tuple(combo)))
    if max_mixtures is not None and len(specs) > max_mixtures:
        keep = np.sort(np.random.default_rng([seed, 2**31]).choice(len(specs), max_mixtures,
                                                                     replace=False))
        specs = [MixtureSpec(i, specs[k].clip_ids, specs[k].labels) for i, k in enumerate(keep)]
    return specs


def mix_sources(clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """References and mixture of one test mixture.

    Shape: N clips (L,) float32 samples → (references (N, L), mixture (L,)), float32.
    """
    length = min(c.shape[0] for c in clips)
    references = np.stack([c[:length] for c in clips]).astype(np.float32)
    return references, references.sum(axis=0)
