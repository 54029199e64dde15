"""The run's budget (steps or wall time) and the learning-rate decay over it."""

from __future__ import annotations

import math

import pytest
import torch

from ial.training.budget import LR_DECAYS, progress, scale_learning_rates


def test_progress_is_the_further_of_steps_and_wall_time():
    assert progress(25, 100, 0.0, float("inf")) == 0.25
    assert progress(25, 100, 30.0, 60.0) == 0.5
    assert progress(90, 100, 30.0, 60.0) == 0.9
    assert progress(1, 100, 61.0, 60.0) > 1.0


def test_cosine_goes_from_one_to_zero_and_constant_stays():
    cos = LR_DECAYS["cosine"]
    assert cos(0.0) == 1.0 and cos(1.0) == pytest.approx(0.0, abs=1e-12)
    assert cos(0.5) == pytest.approx(0.5) and cos(2.0) == pytest.approx(0.0, abs=1e-12)
    assert [LR_DECAYS["constant"](p) for p in (0.0, 0.5, 1.0)] == [1.0, 1.0, 1.0]


def _optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr},
                            {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr / 10}])


def test_without_a_scheduler_the_factor_applies_to_the_configured_lr_not_compounds():
    opt = _optimizer()
    for factor in (0.5, 0.5, 0.25):
        scale_learning_rates(opt, factor)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.025, 0.0025])


def test_with_a_scheduler_the_factor_applies_to_what_it_set():
    opt = _optimizer()
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 4))
    used = []
    for step in range(6):
        scale_learning_rates(opt, LR_DECAYS["cosine"](step / 6))
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        warmup.step()
    expected = [0.1 * min(1.0, (s + 1) / 4) * 0.5 * (1 + math.cos(math.pi * s / 6))
                for s in range(6)]
    assert used == pytest.approx(expected)
