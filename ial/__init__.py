"""IAL: the method, its training and evaluation, and the machinery every stage shares.

Foundation modules (import nothing above them; every other package may import them):
``errors`` (``UserError``: one ``Error: ...`` line), ``runtime`` (where code runs),
``config`` (typed dataclass configs ← YAML ← overrides), ``registry`` (named alternatives),
``storage`` (one root, local or s3://; ``atomic_write``), ``media`` (the one ffmpeg), ``signal``
(STFT, log-frequency warp, masks), ``native`` (builds the C sources once).

Packages, lowest first (a package imports only those before it, and the foundation):
``models`` (separators, the ResNet-18 trunk, model.pt export) → ``preprocessing`` (the data
stages, a sibling top-level package) → ``method`` (losses, critic, mix-and-separate) → ``data``
(loader over shards) → ``separate`` (waveforms → stems; your videos) → ``evaluate`` →
``training`` → ``flows`` (Prefect, top-level) → ``cli`` and ``demo`` (the applications).
``tests/test_layers.py`` enforces these rules; docs/architecture.md draws them.
"""
