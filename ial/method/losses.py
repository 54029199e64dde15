"""Losses of the method: SI-SNR (capped), audio-visual InfoNCE, weighted BCE (Sound of Pixels)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def si_snr(estimate: torch.Tensor, reference: torch.Tensor, cap_db: float | None = 30.0,
           eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SNR in dB, softly capped at ``cap_db``.

    The cap is the soft threshold of Wisdom et al. (2020): the noise energy gets
    ``τ·‖target‖²`` added with τ = 10^(−cap/10), so the value tends smoothly to ``cap_db`` and a
    source already separated beyond the cap stops dominating the loss (authors' ``max_sisnr: 30``;
    they do not say hard or soft clamp — a hard clamp would zero the gradient, so we use the soft
    one). ``cap_db=None`` gives the plain SI-SNR.

    Shape: estimate, reference (..., L) samples → (...,) dB.
    """
    est = estimate - estimate.mean(dim=-1, keepdim=True)
    ref = reference - reference.mean(dim=-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    t_energy = target.pow(2).sum(-1)
    n_energy = noise.pow(2).sum(-1)
    if cap_db is not None:
        n_energy = n_energy + 10.0 ** (-cap_db / 10.0) * t_energy
    return 10.0 * torch.log10((t_energy + eps) / (n_energy + eps))


def _one_direction(logits: torch.Tensor, drop_hardest: int) -> torch.Tensor:
    """InfoNCE over rows of an (M, M) logit matrix whose diagonal holds the positives."""
    M = logits.shape[0]
    eye = torch.eye(M, dtype=torch.bool, device=logits.device)
    # keep at least 2 negatives (a config that would keep fewer is refused by TrainConfig; a batch
    # that happens to hold fewer mixtures drops fewer)
    k = min(drop_hardest, max(M - 3, 0))
    if k > 0:
        negatives = logits.detach().masked_fill(eye, float("-inf"))
        hardest = negatives.topk(k, dim=1).indices  # (M, k)
        dropped = torch.zeros_like(eye).scatter_(1, hardest, True)
        logits = logits.masked_fill(dropped, float("-inf"))
    target = torch.arange(M, device=logits.device)
    return F.cross_entropy(logits, target)


def av_infonce(visual_maps: torch.Tensor, audio_embeddings: torch.Tensor,
               temperature: float = 0.3, drop_hardest: int = 6) -> torch.Tensor:
    """Audio-visual consistency loss L_av (authors' ``contrastive_loss``, symmetric InfoNCE).

    Similarity of visual map i and audio embedding j is the max over locations of their cosine;
    the pair (i, i) is positive, every other pair negative, except the ``drop_hardest`` most
    similar negatives of each anchor, dropped as likely false negatives (same class in another
    mixture; authors' ``hard_sampling.discard_K: 6``). At least two negatives are always kept.

    Shape: visual_maps (M, D, H, W), audio_embeddings (M, D) (both L2-normalised along D) → ().
    """
    v = F.normalize(visual_maps, dim=1)
    a = F.normalize(audio_embeddings, dim=1)
    sim = torch.einsum("idhw,jd->ijhw", v, a).flatten(2).amax(dim=2)  # (M_visual, M_audio)
    logits = sim / temperature
    return 0.5 * (_one_direction(logits, drop_hardest) + _one_direction(logits.t(), drop_hardest))


def sop_weight(mix_mag: torch.Tensor) -> torch.Tensor:
    """SoP's per-bin loss weight: log1p(mixture magnitude) clamped to [1e-3, 10]. Shape
    preserved."""
    return torch.log1p(mix_mag).clamp(1e-3, 10.0)


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted binary cross-entropy on mask logits (Sound of Pixels).

    Shape: logits, target (B, N, F, T), weight broadcastable to them → () mean.
    """
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * weight).mean()


def binary_masks(source_mags: torch.Tensor, mix_mag: torch.Tensor) -> torch.Tensor:
    """Sound of Pixels' binary ground truth, computed on the log grid: source n owns a bin where
    its magnitude exceeds half the mixture's, ``mag_n > 0.5·|mix|`` (SoP main.py; with phase
    interference two sources can both own a bin, or neither).

    Shape: source_mags (B, N, F, T), mix_mag (B, F, T) → (B, N, F, T) in {0, 1}.
    """
    return (source_mags > 0.5 * mix_mag.unsqueeze(1)).to(source_mags.dtype)
