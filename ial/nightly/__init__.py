"""The nightly retraining's plain parts, callable without Prefect (``flows/retrain.py`` runs them).

``config`` (``RetrainConfig``: what a night ingests, trains and evaluates, and when it promotes),
``promotion`` (champion / challenger: the decision, ``champion.json``, the ``promotions/``
records, data fingerprints) and ``summary`` (the night's scores and its markdown summary).
May import every ``ial`` package below it (``ial.evaluate`` for the paired interval of a gain),
never ``flows``, ``ial.cli`` or ``ial.demo``.
"""
