"""Separators by name: ``MODELS`` registry, ``ModelConfig``, ``build_model(cfg)``.

Registered: ``ial_cms`` (the paper's CMS separator) and ``sop`` (Sound of Pixels baseline). The
ablation "CMS without the adversary" is ``ial_cms`` trained with ``lambda_ind: 0`` (a method
config, ``configs/method/cms_only.yaml``), not another model.
"""

from __future__ import annotations

from ial.models.base import SeparationOutput, Separator
from ial.models.config import ModelConfig
from ial.models.registry import MODELS
from ial.models import ial_cms as _ial_cms  # noqa: F401  (registers "ial_cms")
from ial.models import sop as _sop  # noqa: F401  (registers "sop")


def build_model(cfg: ModelConfig) -> Separator:
    """Construct the separator named ``cfg.name`` from its config."""
    return MODELS.get(cfg.name)(cfg)


def count_parameters(model, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["MODELS", "ModelConfig", "SeparationOutput", "Separator", "build_model",
           "count_parameters"]
