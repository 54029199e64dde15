"""Oracle rows: the best a mask-based separator could do on the same mixtures.

Each oracle computes, from the true sources, one mask per source and applies it to the mixture
the way the model does (``ial.signal``): STFT (n_fft 1022, hop 256) → mask × mixture magnitude,
mixture phase → iSTFT. Masks are computed on whole clips (no sliding window: they need no model).

- ``oracle_irm`` — ideal ratio mask on the model's own grid: ``M_i = W|S_i| / Σ_j W|S_j|`` where
  ``W`` is the 256-bin log-frequency warp; the mask is unwarped to 512 bins by
  ``signal.apply_mask`` exactly as the model's mask is. An upper bound for a ratio-mask model on
  this grid (not a strict one: the IRM is not the SDR-optimal mask).
- ``oracle_ibm`` — ideal binary mask on the same grid: ``M_i = 1`` where source ``i`` has the
  largest warped magnitude (ties: the first source), else 0.
- ``oracle_irm_linear`` — the IRM on the plain 512-bin linear STFT (no warp): how much the log
  grid itself costs.

The ``mixture`` row (the mixture as every source's estimate) is added by ``metrics.score_mixture``.
"""

from __future__ import annotations

from typing import Callable

import torch

from ial import signal
from ial.registry import Registry

EPS = 1e-10

# name → fn(references (N, L), mixture (L,)) → (estimates (N, L), masks (N, F, T)); float64.
ORACLES: Registry[Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = \
    Registry("oracle")


def _warped_source_magnitudes(references: torch.Tensor) -> torch.Tensor:
    """Shape: (N, L) → (N, 256, T) warped linear magnitudes."""
    return signal.log_magnitude(references)


@ORACLES.register("oracle_irm")
def ideal_ratio_mask(references: torch.Tensor, mixture: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """IRM on the log grid. Shape: references (N, L), mixture (L,) → ((N, L), (N, 256, T))."""
    mags = _warped_source_magnitudes(references)
    mask = mags / mags.sum(dim=0, keepdim=True).clamp_min(EPS)
    return _apply_log_mask(mixture, mask), mask


@ORACLES.register("oracle_ibm")
def ideal_binary_mask(references: torch.Tensor, mixture: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """IBM on the log grid. Shape: references (N, L), mixture (L,) → ((N, L), (N, 256, T))."""
    mags = _warped_source_magnitudes(references)
    winner = mags.argmax(dim=0)  # (256, T)
    mask = (winner.unsqueeze(0) == torch.arange(mags.shape[0]).view(-1, 1, 1)).to(mags.dtype)
    return _apply_log_mask(mixture, mask), mask


@ORACLES.register("oracle_irm_linear")
def ideal_ratio_mask_linear(references: torch.Tensor, mixture: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """IRM on the linear STFT. Shape: references (N, L), mixture (L,) → ((N, L), (N, 512, T))."""
    mags = signal.stft(references).abs()
    mask = mags / mags.sum(dim=0, keepdim=True).clamp_min(EPS)
    estimates = signal.istft(signal.stft(mixture).unsqueeze(0) * mask, mixture.shape[-1])
    return estimates, mask


def _apply_log_mask(mixture: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Shape: mixture (L,), mask (N, 256, T) → (N, L)."""
    spec = signal.stft(mixture.unsqueeze(0))  # (1, 512, T)
    return signal.apply_mask(spec, mask.unsqueeze(0), mixture.shape[-1])[0]


def oracle_estimates(names: list[str], references, mixture) -> dict[str, tuple]:
    """Run the named oracles in float64.

    Shape: references (N, L), mixture (L,) samples (numpy or torch) →
    ``{name: (estimates (N, L) numpy float64, masks (N, F, T) numpy)}``.
    """
    refs = torch.as_tensor(references, dtype=torch.float64)
    mix = torch.as_tensor(mixture, dtype=torch.float64)
    out = {}
    with torch.no_grad():
        for name in names:
            est, mask = ORACLES.get(name)(refs, mix)
            out[name] = (est.numpy(), mask.numpy())
    return out
