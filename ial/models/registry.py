"""The ``MODELS`` registry (separators by name). Import ``ial.models`` to get every model
registered."""

from ial.registry import Registry

MODELS = Registry("model")
