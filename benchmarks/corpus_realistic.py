"""Build the realistic benchmark corpus (``ial.demo.realistic_corpus``): sampled General-MIDI
instruments playing Bach chorale voices, pictures of the instrument among distractors, a VGGSound
CSV with ~10 % missing videos. Deterministic in ``--seed``; resumable (videos already made are
kept).

``--setup`` first installs what it needs: Debian's ``fluidsynth`` and ``timgm6mb-soundfont``
(apt-get, as root) and ``music21`` (pip, into this Python).

Usage: ``python benchmarks/corpus_realistic.py --out DIR [--seed 0] [--quick] [--setup]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ial.demo.realistic_corpus import (QUICK, RealisticCorpusConfig,  # noqa: E402
                                       generate_realistic_corpus, install_tools)


def build(out: str, seed: int = 0, quick: bool = False, workers: int = 2):
    cfg = RealisticCorpusConfig(out, seed=seed, workers=workers, **(QUICK if quick else {}))
    return generate_realistic_corpus(cfg, progress=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="corpus folder (videos/ + vggsound.csv)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a tiny corpus (a smoke run)")
    p.add_argument("--setup", action="store_true", help="install fluidsynth, a soundfont, music21")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    if a.setup:
        install_tools()
    t0 = time.perf_counter()
    corpus = build(a.out, a.seed, a.quick, a.workers)
    print(f"{corpus.manifest}: {len(corpus.rows)} rows, {corpus.served} videos served, "
          f"{corpus.missing} listed but missing, {len(corpus.classes)} classes "
          f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
