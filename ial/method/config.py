"""``MethodConfig``: how the separator is trained (``configs/method/*.yaml``), and the weight
schedules it names (``SCHEDULES``: constant, linear, step10, step10_fade).

The defaults are the authors' published recipe (ZhenkaiLin/IAL-CMS: ``GeometricGANwAVC.yaml`` and
the README's training commands); a comment says where and why ours differs. Two schedules count
different things, as the authors' code does: λ_ind steps count batches (their LightningModule's
``batch_t``), λ_av steps count separator updates (their ``AVSeparator.batch_t`` advances only when
``calculate_loss`` runs, i.e. every ``separator_every``-th batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

from ial.config import ConfigError
from ial.registry import Registry

SCHEDULES: Registry[Callable[[float, list[int], int], float]] = Registry("weight schedule")


@SCHEDULES.register("constant")
def constant_schedule(final: float, steps: list[int], t: int) -> float:
    """``final`` at every step."""
    return final


@SCHEDULES.register("linear")
def linear_schedule(final: float, steps: list[int], t: int) -> float:
    """0 before ``steps[0]``, then linear up to ``final`` at ``steps[1]``."""
    start, end = steps
    if t < start:
        return 0.0
    return final if end == start else final * min(1.0, (t - start) / (end - start))


@SCHEDULES.register("step10")
def step10_schedule(final: float, steps: list[int], t: int) -> float:
    """The authors' warm-up: ``final / 10^len(steps)`` at first, ×10 after each listed step
    (their loop multiplies once the step whose counter equals a listed value is done):
    ``final / 10^(number of listed steps >= t)``."""
    return final / 10 ** sum(1 for s in steps if t <= s)


@SCHEDULES.register("step10_fade")
def step10_fade_schedule(final: float, steps: list[int], t: int) -> float:
    """``step10`` over all but the last two steps, then a fade: linear from ``final`` at
    ``steps[-2]`` down to 0 at ``steps[-1]``, and 0 after (ours, not the authors': the adversary
    as a regulariser of the first part of training only)."""
    *warm_up, fade_start, fade_end = steps
    if t <= fade_start:
        return step10_schedule(final, warm_up, t)
    return final * max(0.0, (fade_end - t) / (fade_end - fade_start))


@dataclass
class MethodConfig:
    """How the separator is trained (``configs/method/*.yaml``). Defaults: the authors'
    published recipe (``GeometricGANwAVC.yaml`` + README) unless a comment says otherwise."""

    # "supervised": N-mix of solo clips, a target per source; "unsupervised": two duets summed,
    # four components, duet-level targets only.
    mode: Literal["supervised", "unsupervised"] = "supervised"
    # Sources per mixture (supervised: 2 or 3; unsupervised: duets per mixture, 2).
    n_mix: int = 2
    # Unsupervised mode only: where its duets come from. "videos" (the authors'): every clip is a
    # duet video, its two queries the halves of its picture. "solo_pairs" (our option, for corpora
    # of solos such as the realistic benchmark): two solo clips of different classes are summed
    # into a duet whose only target is that sum, each player's query its own picture (as the
    # authors' detector crop of one player); validation scores the solo pairs, as ial.evaluate.
    duets: Literal["videos", "solo_pairs"] = "videos"
    # Random gain range of each mixed clip, ±dB (authors: 0, unit gains; ±6 dB is our option).
    mix_gain_db: float = 0.0
    # Separation loss: "auto" = weighted BCE on binary masks for sop, −SI-SNR otherwise.
    separation_loss: Literal["auto", "si_snr", "weighted_bce"] = "auto"
    # SI-SNR cap in dB (authors' max_sisnr: 30; soft cap, see ial.method.losses.si_snr).
    max_si_snr_db: float = 30.0
    # Final weight of the audio-visual consistency InfoNCE L_av (authors' lambda_avc: 0.05).
    lambda_av: float = 0.05
    # λ_av schedule and its steps, in SEPARATOR UPDATES (authors' README:
    # --lambda_avc_incresing_step 4000 8000 12000: 0.05/1000 at first, ×10 after each).
    lambda_av_schedule: Literal["constant", "linear", "step10", "step10_fade"] = "step10"
    lambda_av_steps: list[int] = field(default_factory=lambda: [4000, 8000, 12000])
    # InfoNCE temperature (authors' t: 0.3).
    temperature: float = 0.3
    # Hardest negatives dropped per anchor as likely false negatives (authors' discard_K: 6).
    # With the batch's embeddings, at least 2 negatives must remain (checked with the train
    # config's batch_size).
    drop_hardest: int = 6
    # Final weight of the independency adversarial term (authors' lambda_ind: 0.01). 0 = the
    # "CMS without the adversary" ablation (no critic is trained; the authors' supervised
    # command runs this way).
    lambda_ind: float = 0.01
    # λ_ind schedule and its steps, in BATCHES (authors' README:
    # --lambda_independence_incresing_step 8000 16000 24000: 0.01/1000 at first, ×10 after each).
    lambda_ind_schedule: Literal["constant", "linear", "step10", "step10_fade"] = "step10"
    lambda_ind_steps: list[int] = field(default_factory=lambda: [8000, 16000, 24000])
    # Weight of an auxiliary cross-entropy on the visual queries' class logits (the model's
    # n_classes head) against the class of the clip each query shows: supervised mode, or
    # duets: solo_pairs (each player's own clip, as a detector's class of its crop). Not in the
    # paper (docs/model.md): 0, off.
    lambda_cls: float = 0.0
    # Train the critic every `critic_every` batches (authors' train_critics_interval: 1).
    critic_every: int = 1
    # Critic updates on each batch it trains on (ours; authors: 1). Each draws fresh independent
    # partners from the bank; the batch's components join the bank once, after the last. With
    # separator_every 3 the authors' critic gets 3 updates per separator update over three
    # batches; with separator_every 1, critic_updates 3 gives that ratio on one batch.
    critic_updates: int = 1
    # Update the separator (separation + L_av + the adversarial term) every `separator_every`
    # batches (authors' train_generator_interval: 3; between those batches only the critic
    # trains, on a no-grad forward of the separator).
    separator_every: int = 3
    # Memory bank of past components (authors: 1000).
    bank_size: int = 1000
    # Critic width (DCGAN ndf; authors: 64) and input grid (authors: 256×256; 128×128 keeps the
    # bank at 33 MB instead of 131 MB, an option).
    critic_ndf: int = 64
    critic_input_size: list[int] = field(default_factory=lambda: [256, 256])
    # Hinge margin weight C of the Geometric-GAN critic loss (authors: 1).
    critic_hinge_c: float = 1.0
    # How a component's independent partner is drawn from the bank: "any" entry (authors'), or
    # "label_matched", an entry of the class of its dependent partner (our option, supervised
    # mode). Mixtures join clips of different classes, so with "any" the class alone separates
    # the two kinds of pair (ial.method.critic.IndependencyCritic.make_pairs).
    critic_pairs: Literal["any", "label_matched"] = "any"

    def validate(self) -> None:
        if self.mode == "supervised" and self.n_mix not in (2, 3):
            raise ConfigError("n_mix", "supervised mixing uses 2 or 3 sources")
        if self.mode == "unsupervised" and self.n_mix < 2:
            raise ConfigError("n_mix", "unsupervised mixing needs at least 2 duets")
        if self.duets == "solo_pairs" and self.mode != "unsupervised":
            raise ConfigError("duets", "solo_pairs builds the duets of unsupervised mode "
                                       "(mode: unsupervised)")
        for name in ("lambda_ind", "lambda_av", "lambda_cls"):
            if getattr(self, name) < 0:
                raise ConfigError(name, "loss weights must be >= 0")
        for name in ("lambda_ind", "lambda_av"):
            kind, steps = getattr(self, f"{name}_schedule"), getattr(self, f"{name}_steps")
            if kind == "linear" and (len(steps) != 2 or steps[0] > steps[1]):
                raise ConfigError(f"{name}_steps", "the linear schedule needs [start, end], "
                                                   "start <= end")
            if kind == "step10_fade" and (len(steps) < 2 or steps[-2] >= steps[-1]):
                raise ConfigError(f"{name}_steps", "the step10_fade schedule needs its warm-up "
                                                   "steps, then [fade start, fade end], "
                                                   "start < end")
            if any(s < 0 for s in steps) or list(steps) != sorted(steps):
                raise ConfigError(f"{name}_steps", "steps must be ascending and >= 0")
        for name in ("critic_every", "separator_every"):
            if getattr(self, name) < 1:
                raise ConfigError(name, "intervals must be >= 1")
        if self.critic_updates < 1:
            raise ConfigError("critic_updates", "the critic's updates per batch must be >= 1")
        if self.lambda_cls > 0 and self.mode != "supervised" and self.duets != "solo_pairs":
            raise ConfigError("lambda_cls", "needs one label per visual query: supervised mode, "
                                            "or duets: solo_pairs (a duet video's two players "
                                            "have no label each)")
        if self.drop_hardest < 0:
            raise ConfigError("drop_hardest", "must be >= 0")
        if self.temperature <= 0:
            raise ConfigError("temperature", "must be > 0")
        if len(self.critic_input_size) != 2 or min(self.critic_input_size) < 8:
            raise ConfigError("critic_input_size", "must be [bins, frames], each >= 8")
        if self.bank_size < 1:
            raise ConfigError("bank_size", "must be >= 1")
        if self.critic_pairs == "label_matched" and self.mode != "supervised":
            raise ConfigError("critic_pairs", "label_matched needs supervised mode (one label "
                                              "per component)")

    @property
    def components_per_mixture(self) -> int:
        """Separated components (visual queries) per mixture: n_mix, or 2 per duet."""
        return self.n_mix * (2 if self.mode == "unsupervised" else 1)

    @property
    def clips_per_mixture(self) -> int:
        """Clips of the loader's batch that one training mixture uses: n_mix, or 2 per duet
        built from solo pairs."""
        return self.n_mix * (2 if self.duets == "solo_pairs" else 1)


# The fields that only configure the critic and the adversarial term. With lambda_ind = 0 nothing
# reads them during training: the critic is built after the separator, the RNGs are re-seeded
# after both (ial.training.trainer), and it is never trained or scored. So a run without the
# adversary is the same training whatever they hold (used by the realistic benchmark to reuse
# a finished `cms` run when only the critic of `ial` changed).
CRITIC_ONLY_FIELDS = ("lambda_ind_schedule", "lambda_ind_steps", "critic_every", "critic_updates",
                      "bank_size", "critic_ndf", "critic_input_size", "critic_hinge_c",
                      "critic_pairs")


def lambda_ind_at(cfg: MethodConfig, batch: int) -> float:
    """λ_ind at batch ``batch`` (0-based)."""
    if cfg.lambda_ind == 0:
        return 0.0
    return SCHEDULES.get(cfg.lambda_ind_schedule)(cfg.lambda_ind, cfg.lambda_ind_steps, batch)


def lambda_av_at(cfg: MethodConfig, batch: int) -> float:
    """λ_av at batch ``batch``, whose schedule counts separator updates: the separator update at
    batch ``b`` is update number ``ceil(b / separator_every)`` (0-based)."""
    if cfg.lambda_av == 0:
        return 0.0
    updates = -(-batch // cfg.separator_every)
    return SCHEDULES.get(cfg.lambda_av_schedule)(cfg.lambda_av, cfg.lambda_av_steps, updates)
