"""Ingest: manifest → exact 10 s sections (yt-dlp) → clips (ffmpeg) → clip index + per-batch stats.

Entry point: ``ingest(cfg: IngestConfig, progress=True, client=None) -> summary``. Inside:
``manifests`` (readers by format) → ``batch`` (plan the batches, run one) → ``clip`` (one clip:
``download`` + ``slicing``, every failure named by ``outcomes``) with ``rate_limit`` shared by the
batches; ``run`` ties them together (resume, stale temporaries, summary); ``config`` holds
``IngestConfig``. Writes the clip index contract (``preprocessing.clip_index``).
"""

from preprocessing.ingest.config import IngestConfig, redacted_config
from preprocessing.ingest.run import ingest

__all__ = ["IngestConfig", "ingest", "redacted_config"]
