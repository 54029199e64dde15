"""Fixtures of the preprocessing tests, reusable by other test folders:

- ``demo_corpus`` (session): a small generated corpus (4 classes x 2 videos, 13 s each) with its
  VGGSound CSV — ``preprocessing.demo_corpus.CorpusInfo``.
- ``video_server`` (per test): a fresh Range-capable loopback HTTP server over that corpus
  (``preprocessing.video_server.VideoServer``; ``.url_template`` for ingest, ``.script`` for faults).
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    from preprocessing.demo_corpus import generate_corpus

    out = tmp_path_factory.mktemp("demo_corpus")
    return generate_corpus(str(out), videos_per_class=2, seconds=13.0, seed=0, workers=2)


@pytest.fixture
def video_server(demo_corpus):
    from preprocessing.video_server import VideoServer

    with VideoServer(demo_corpus.out_dir) as srv:
        yield srv
