"""``UserError``: a problem with what the user gave (a config value, a file, a bucket, a video).

Every stage raises a subclass of it (``ConfigError``, ``ManifestError``, ``StorageError``,
``CheckpointError``, ...) with a message that names the thing and where it came from. The
``ial`` command and ``python -m ial.evaluate`` print it as one line, ``Error: <message>``, and
exit with status 1 — never a traceback. Anything else is a bug or an outage and keeps its
traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user; ``str(exc)`` is the one line shown to them."""
