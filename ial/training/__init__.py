"""DeepSpeed training of the separator + critic, resumable exactly (docs/training.md).

``config`` (``TrainConfig``, DeepSpeed JSONs) → ``launcher`` (this process, a subprocess, or the
``deepspeed`` launcher; ``python -m ial.training``) → ``trainer`` (one rank's loop) using
``engines`` (the two DeepSpeed engines, one step), ``run_dir`` (where a run lives, the commit
marker, S3 staging) and ``validation`` (SDR on fixed val mixtures); the nightly retraining's
champion / challenger promotion is ``ial.nightly``. May import every ``ial`` package below it
and the preprocessing contracts (``shards``), never ``flows``, ``ial.cli`` or ``ial.demo``.
"""
