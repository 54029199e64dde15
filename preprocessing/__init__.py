"""Data preparation, usable without Prefect: the two data stages and the contracts between them.

- ``ingest/``: manifest → exact sections (yt-dlp) → clips (ffmpeg) + clip index; entry point
  ``preprocessing.ingest.ingest(IngestConfig)``;
- ``featurize/``: ok clips → Parquet feature shards (Dask); entry point
  ``preprocessing.featurize.featurize(FeaturizeConfig)``;
- the contracts, read by the next stage without reaching into the one that wrote them:
  ``clip_index`` (ingest → featurize), ``shard_schema`` and ``shards`` (featurize → training,
  evaluation).

May import: the ``ial`` foundation modules and ``ial.models`` (the frozen frame trunk). Never
``ial.method``, ``ial.data``, ``ial.training``, ``ial.evaluate``, ``ial.separate``, ``ial.cli``,
``ial.demo`` or ``flows``; ``ingest`` and ``featurize`` never import each other.
"""
