"""Featurize: ``ok`` clips of the clip index → Parquet feature shards (Dask, local or S3).

Entry point: ``featurize(cfg: FeaturizeConfig, client=None, progress=True) -> summary``. Inside:
``planning`` (which clips go to which shard) → one ``shard_task`` per shard on the Dask cluster →
``features`` per batch of clips (``clip_decode``: audio + frames in one ffmpeg pass; ``frames``:
the JPEG codec; the STFT and the frozen ResNet-18) → ``run`` rebuilds the dataset index. Reads the
clip index contract, writes the shard contract (``preprocessing.shard_schema``, ``.shards``).
``featurize_clip`` featurizes one video the same way (``ial separate`` uses it).
"""

from preprocessing.featurize.config import FeaturizeConfig
from preprocessing.featurize.features import featurize_clip, load_backbone
from preprocessing.featurize.run import featurize

__all__ = ["FeaturizeConfig", "featurize", "featurize_clip", "load_backbone"]
