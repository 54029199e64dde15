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


class ConfigError(UserError, ValueError):
    """A config value is wrong. ``field`` is the dotted path of the offending field; ``source``
    says where its value came from: a file path (shown as "in <path>") or a phrase ("from --set
    lr=3", "from --root")."""

    def __init__(self, field: str, message: str, source: str | None = None):
        self.field = field
        self.source = source
        self.message = message
        if field == "<file>":  # the file itself (missing, not YAML, not a mapping)
            super().__init__(f"config file {source}: {message}")
        else:
            super().__init__(f"config field '{field}': {message}{_where(source)}")


def _where(source: str | None) -> str:
    if not source:
        return ""
    return f" ({source})" if source.startswith(("from ", "in ", "the ")) else f" (in {source})"


def first_line(exc: BaseException) -> str:
    """What ``exc`` says, in one line: its message's first line, or its type's name when it says
    nothing (a library's paragraph of advice, shown in an ``Error:`` line)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
