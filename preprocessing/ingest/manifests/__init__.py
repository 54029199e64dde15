"""Manifest readers by format (``MANIFEST_READERS``: vggsound, audioset, music, generic, ave) →
``Manifest`` of ``ManifestEntry`` rows; ``base`` holds the types and shared helpers, ``formats``
the readers (registered on import)."""

from preprocessing.ingest.manifests import formats as _formats  # noqa: F401  (registers readers)
from preprocessing.ingest.manifests.base import (MANIFEST_READERS, Manifest, ManifestEntry,
                                                 ManifestError, read_manifest, reader_options)

__all__ = ["MANIFEST_READERS", "Manifest", "ManifestEntry", "ManifestError", "read_manifest",
           "reader_options"]
