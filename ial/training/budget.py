"""How far a run is through its budget, and the separator's learning-rate decay over it.

A run ends at ``TrainConfig.steps`` or after ``max_minutes``, whichever comes first, so its
progress is the larger of the two fractions. ``TrainConfig.lr_decay`` names a multiplier of that
progress (``LR_DECAYS``) that ``scale_learning_rates`` applies on top of whatever the DeepSpeed
scheduler set (its warm-up, say): with a wall-time budget the number of steps is not known in
advance, so a step-indexed DeepSpeed schedule (WarmupDecayLR, WarmupCosineLR) cannot end with it.

- ``progress(step, steps, elapsed_s, budget_s)``: fraction of the budget used, 0 … ≥1;
- ``LR_DECAYS``: name → ``factor(progress)``;
- ``scale_learning_rates(optimizer, factor)``: each group's lr = its scheduled lr × factor.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch


def progress(step: int, steps: int, elapsed_s: float, budget_s: float) -> float:
    """Fraction of the run's budget used: max(step / steps, elapsed_s / budget_s) (a budget_s of
    inf: steps only). ≥ 1 means the run is over."""
    return max(step / steps, elapsed_s / budget_s if math.isfinite(budget_s) else 0.0)


def constant(progress: float) -> float:
    """No decay: the scheduled lr as it is."""
    return 1.0


def cosine(progress: float) -> float:
    """Half a cosine from 1 at the start to 0 at the end of the budget."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


LR_DECAYS: dict[str, Callable[[float], float]] = {"constant": constant, "cosine": cosine}

_SCHEDULED = "scheduled_lr"   # the lr the scheduler (or the config) set, before our factor
_APPLIED = "decayed_lr"       # the lr we set, to notice when the scheduler has set a new one


def scale_learning_rates(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set each parameter group's lr to its scheduled lr × ``factor``.

    The scheduled lr is the group's lr unless it is still the one this function set last time
    (no scheduler, or the scheduler did not step since: a batch without a separator update),
    in which case the one remembered then. Both are kept in the group (saved with the optimizer's
    state, so a resumed run continues the same way).
    """
    for group in optimizer.param_groups:
        if group.get(_APPLIED) != group["lr"]:
            group[_SCHEDULED] = group["lr"]
        group["lr"] = group[_SCHEDULED] * factor
        group[_APPLIED] = group["lr"]
