"""``MethodConfig``: how the separator is trained (``configs/method/*.yaml``), and the λ_ind
schedule it describes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ial.config import ConfigError


@dataclass
class MethodConfig:
    """How the separator is trained (``configs/method/*.yaml``). Defaults: the paper / authors'
    ``GeometricGANwAVC.yaml`` unless a comment says otherwise."""

    # "supervised": N-mix of solo clips, a target per source; "unsupervised": two duets summed,
    # four components, duet-level targets only.
    mode: Literal["supervised", "unsupervised"] = "supervised"
    # Sources per mixture (supervised: 2 or 3; unsupervised: duets per mixture, 2).
    n_mix: int = 2
    # Random gain range of each mixed clip, ±dB (our choice; the released code uses unit gains).
    mix_gain_db: float = 6.0
    # Separation loss: "auto" = weighted BCE on binary masks for sop, −SI-SNR otherwise.
    separation_loss: Literal["auto", "si_snr", "weighted_bce"] = "auto"
    # SI-SNR cap in dB (authors' max_sisnr: 30; soft cap, see ial.method.losses.si_snr).
    max_si_snr_db: float = 30.0
    # Weight of the audio-visual consistency InfoNCE L_av (authors' lambda_avc: 0.05).
    lambda_av: float = 0.05
    # InfoNCE temperature (authors' t: 0.3).
    temperature: float = 0.3
    # Hardest negatives dropped per anchor as likely false negatives (authors' discard_K: 6).
    drop_hardest: int = 6
    # Final weight of the independency adversarial term (authors' lambda_ind: 0.01). 0 = the
    # "CMS without the adversary" ablation (no critic is trained).
    lambda_ind: float = 0.01
    # λ_ind schedule: "constant"; "linear" = 0 until steps[0], linear up to lambda_ind at steps[1]
    # (our default: the authors raise λ by ×10 at listed steps but do not publish the list);
    # "step10" = the authors' rule: lambda_ind / 10^(number of listed steps not yet reached).
    lambda_ind_schedule: Literal["constant", "linear", "step10"] = "linear"
    lambda_ind_steps: list[int] = field(default_factory=lambda: [1000, 10000])
    # Train the critic every `critic_every` steps (authors: 1).
    critic_every: int = 1
    # Add the adversarial term to the separator loss every `separator_adv_every` steps (authors'
    # train_generator_interval: 3; the authors skip the whole separator step in between, we keep
    # training separation every step and only space the adversarial term).
    separator_adv_every: int = 3
    # Memory bank of past components (authors: 1000).
    bank_size: int = 1000
    # Critic width (DCGAN ndf; authors: 64) and input grid (ours: 128×128, authors: 256×256).
    critic_ndf: int = 64
    critic_input_size: list[int] = field(default_factory=lambda: [128, 128])
    # Hinge margin weight C of the Geometric-GAN critic loss (authors: 1).
    critic_hinge_c: float = 1.0

    def validate(self) -> None:
        if self.mode == "supervised" and self.n_mix not in (2, 3):
            raise ConfigError("n_mix", "supervised mixing uses 2 or 3 sources")
        if self.mode == "unsupervised" and self.n_mix < 2:
            raise ConfigError("n_mix", "unsupervised mixing needs at least 2 duets")
        if self.lambda_ind < 0 or self.lambda_av < 0:
            raise ConfigError("lambda_ind", "loss weights must be >= 0")
        if self.lambda_ind_schedule == "linear" and (
                len(self.lambda_ind_steps) != 2 or self.lambda_ind_steps[0] > self.lambda_ind_steps[1]):
            raise ConfigError("lambda_ind_steps", "the linear schedule needs [start, end], start <= end")
        if self.critic_every < 1 or self.separator_adv_every < 1:
            raise ConfigError("separator_adv_every", "intervals must be >= 1")
        if self.temperature <= 0:
            raise ConfigError("temperature", "must be > 0")
        if len(self.critic_input_size) != 2 or min(self.critic_input_size) < 8:
            raise ConfigError("critic_input_size", "must be [bins, frames], each >= 8")
        if self.bank_size < 1:
            raise ConfigError("bank_size", "must be >= 1")


def lambda_schedule(cfg: MethodConfig, step: int) -> float:
    """λ_ind at ``step`` (see ``MethodConfig.lambda_ind_schedule``)."""
    lam = cfg.lambda_ind
    if lam == 0 or cfg.lambda_ind_schedule == "constant":
        return lam
    if cfg.lambda_ind_schedule == "linear":
        start, end = cfg.lambda_ind_steps
        if step < start:
            return 0.0
        if end == start:
            return lam
        return lam * min(1.0, (step - start) / (end - start))
    pending = sum(1 for s in cfg.lambda_ind_steps if step < s)
    return lam / 10 ** pending
