"""IAL training objective: separator + independency critic + memory bank → two losses.

``IALMethod(model_cfg, method_cfg)`` holds ``.separator`` (a ``Separator``), ``.critic``
(``IndependencyCritic``, which owns the memory bank ``.critic.bank`` = ``.bank``) and computes:

- ``separator_loss(mix, step)`` → (loss, logs, components): separation loss (−SI-SNR capped at
  30 dB, or weighted BCE for ``sop``) + λ_av(step) · L_av [+ λ_cls · class cross-entropy of the
  visual queries, an option, off by default] + λ_ind(step) · (mean s_ind − mean s_dep), the last
  term whenever λ_ind(step) > 0. ``components`` (B, N, 256, T) are the separated
  magnitudes on the log grid, DETACHED — pass them to ``critic_loss``.
- ``critic_loss(components, step)`` → (loss, logs): Geometric-GAN hinge loss on dependent pairs
  (same mixture) vs independent pairs (bank). It then PUSHES the components into the bank (so
  the bank only ever holds components from earlier steps when pairs are drawn).

The schedule (authors' ``AdversarialTrainLightingModule``): the critic trains every
``critic_every``-th batch, the separator every ``separator_every``-th (3). One batch with two
optimizers / DeepSpeed engines (``ial.training.engines.train_step``; the critic's parameters are
trainable at engine initialisation and frozen during the separator's backward)::

    components = None
    if method.separator_due(step):
        with method.critic_frozen():
            loss, logs, components = method.separator_loss(mix, step, separator=sep_engine)
            sep_engine.backward(loss); sep_engine.step()
    if method.critic_due(step):
        components = components if components is not None else method.components(mix)
        c_loss, c_logs = method.critic_loss(components, step, critic=critic_engine)
        critic_engine.backward(c_loss); critic_engine.step()

(The separator's adversarial term scores pairs with the critic MODULE — the default — not its
engine: a DeepSpeed engine's forward arms backward hooks that expect ``critic_engine.backward``.)

On a batch with both updates the critic reuses the separator forward's detached components (the
authors run a separate no-grad forward first; reusing saves a forward and differs only by the
parameters of one separator update); on the other batches ``components`` is a no-grad forward in
train mode, as theirs.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

from ial import signal
from ial.config import ConfigError
from ial.method.config import MethodConfig, lambda_av_at, lambda_ind_at
from ial.method.critic import IndependencyCritic, critic_hinge_loss, separator_adversarial_loss
from ial.method.losses import av_infonce, binary_masks, si_snr, sop_weight
from ial.method.mixing import ClipBatch, MixBatch, make_mixtures
from ial.models import ModelConfig, SeparationOutput, build_model


class IALMethod(nn.Module):
    """Separator + independency critic (+ its memory bank) and the two training losses."""

    def __init__(self, model_cfg: ModelConfig, method_cfg: MethodConfig):
        super().__init__()
        self.model_cfg = model_cfg
        self.cfg = method_cfg
        self.separator = build_model(model_cfg)
        self.critic = IndependencyCritic(tuple(method_cfg.critic_input_size),
                                         method_cfg.critic_ndf, method_cfg.bank_size,
                                         method_cfg.critic_pairs)
        loss = method_cfg.separation_loss
        if loss == "auto":
            loss = "weighted_bce" if model_cfg.name == "sop" else "si_snr"
        self.loss_kind = loss
        if loss == "weighted_bce" and model_cfg.mask_activation != "sigmoid":
            raise ConfigError("method.separation_loss",
                              "weighted_bce scores sigmoid masks; model.mask_activation is "
                              f"{model_cfg.mask_activation!r}")
        if method_cfg.lambda_cls > 0 and getattr(self.separator, "class_head", None) is None:
            raise ConfigError("model.n_classes",
                              f"lambda_cls {method_cfg.lambda_cls} needs a class head: model "
                              f"ial_cms with n_classes = the dataset's class count (model "
                              f"{model_cfg.name!r}, n_classes {model_cfg.n_classes})")

    @property
    def bank(self):
        """The memory bank (lives inside the critic so the critic's checkpoint carries it)."""
        return self.critic.bank

    @property
    def uses_critic(self) -> bool:
        """False for λ_ind = 0 (ablation / sop): no critic needs training."""
        return self.cfg.lambda_ind > 0

    def lambda_ind(self, step: int) -> float:
        """λ_ind at batch ``step`` (its schedule counts batches)."""
        return lambda_ind_at(self.cfg, step)

    def lambda_av(self, step: int) -> float:
        """λ_av at batch ``step`` (its schedule counts separator updates)."""
        return lambda_av_at(self.cfg, step)

    def separator_due(self, step: int) -> bool:
        """Whether the separator updates at batch ``step`` (every ``separator_every``-th)."""
        return step % self.cfg.separator_every == 0

    def critic_due(self, step: int) -> bool:
        """Whether the critic trains at ``step`` (every ``critic_every`` steps, if used)."""
        return self.uses_critic and step % self.cfg.critic_every == 0

    def adversary_due(self, step: int) -> bool:
        """Whether the separator loss at ``step`` carries the adversarial term (every separator
        update once λ_ind > 0)."""
        return self.separator_due(step) and self.lambda_ind(step) > 0

    @torch.no_grad()
    def components(self, mix: MixBatch) -> torch.Tensor:
        """The separated magnitudes of a no-grad separator forward (train mode: BatchNorm
        statistics update, as the authors' critic-step forward). Shape: (B, N, 256, T)."""
        out, _, mag = self.separate(mix)
        return (out.mask * mag.unsqueeze(1)).detach()

    def mixtures(self, clips: ClipBatch, generator: torch.Generator) -> MixBatch:
        """``make_mixtures`` with this method's mode, n_mix, gain range and duets."""
        return make_mixtures(clips, self.cfg.n_mix, self.cfg.mode, generator,
                             gain_db=self.cfg.mix_gain_db,
                             solo_duets=self.cfg.duets == "solo_pairs")

    def scored_mixtures(self, clips: ClipBatch, generator: torch.Generator) -> MixBatch:
        """The mixtures validation scores: the training mixtures, except that duets built from
        solo pairs are scored as ``ial.evaluate`` scores them, as n_mix solos mixed (supervised),
        each separated by its own query against its own ground truth."""
        if self.cfg.duets != "solo_pairs":
            return self.mixtures(clips, generator)
        return make_mixtures(clips, self.cfg.n_mix, "supervised", generator,
                             gain_db=self.cfg.mix_gain_db)

    @contextlib.contextmanager
    def critic_frozen(self) -> Iterator[None]:
        """Critic parameters get requires_grad=False inside (restored after): wrap the
        separator's forward AND backward in it so no gradient reaches the critic."""
        params = list(self.critic.parameters())
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, f in zip(params, flags):
                p.requires_grad_(f)

    def separate(self, mix: MixBatch, separator: Callable | None = None
                 ) -> tuple[SeparationOutput, torch.Tensor, torch.Tensor]:
        """Run the separator on a MixBatch.

        Returns (output, mixture STFT (B, 512, T) complex, warped mixture magnitude (B, 256, T)).
        """
        spec = signal.stft(mix.mixture)
        mag = signal.log_warp(spec.abs())
        out = (separator or self.separator)(mag, mix.visual)
        return out, spec, mag

    def _group(self, x: torch.Tensor, mix: MixBatch, reduce: str) -> torch.Tensor:
        """Components → targets: (B, N, ...) → (B, S, ...) by ``mix.component_source``."""
        S = mix.sources.shape[1]
        if x.shape[1] == S:
            return x
        idx = mix.component_source.to(x.device)
        if reduce == "sum":
            out = x.new_zeros(x.shape[0], S, *x.shape[2:])
            return out.index_add(1, idx, x)
        # "or": probability that any component of the target is on: 1 − Π(1 − p).
        log_off = x.new_zeros(x.shape[0], S, *x.shape[2:]).index_add(
            1, idx, torch.log1p(-x.clamp(max=1 - 1e-6)))
        return 1 - log_off.exp()

    def separator_loss(self, mix: MixBatch, step: int, separator: Callable | None = None,
                       critic: Callable | None = None
                       ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """Separator objective at ``step``.

        ``separator`` / ``critic``: callables to run instead of ``self.separator`` /
        ``self.critic`` (e.g. their DeepSpeed engines). Wrap the call and the backward in
        ``critic_frozen()`` when the adversarial term is on.

        Returns (loss (), logs, components (B, N, 256, T) detached separated magnitudes).
        """
        cfg = self.cfg
        out, spec, mag = self.separate(mix, separator)
        components = out.mask * mag.unsqueeze(1)  # (B, N, 256, T)
        logs: dict[str, float] = {}
        if self.loss_kind == "si_snr":
            est = signal.apply_mask(spec, out.mask, mix.mixture.shape[-1])  # (B, N, L)
            snr = si_snr(self._group(est, mix, "sum"), mix.sources, cfg.max_si_snr_db)
            loss_sep = -snr.mean()
            logs["si_snr_db"] = float(snr.detach().mean())
        else:
            if out.logits is None:
                raise ValueError(f"model {self.model_cfg.name!r} gives no logits for weighted BCE")
            target = binary_masks(signal.log_warp(signal.stft(mix.sources).abs()), mag)
            weight = sop_weight(mag).unsqueeze(1)
            if mix.n_components == mix.sources.shape[1]:
                bce = nn.functional.binary_cross_entropy_with_logits(
                    out.logits, target, reduction="none")
            else:
                prob = self._group(torch.sigmoid(out.logits), mix, "or").clamp(1e-6, 1 - 1e-6)
                bce = nn.functional.binary_cross_entropy(prob, target, reduction="none")
            loss_sep = (bce * weight).mean()
        logs["loss_sep"] = float(loss_sep.detach())
        loss = loss_sep
        lam_av = self.lambda_av(step)
        if lam_av > 0 and out.audio_embedding is not None:
            loss_av = av_infonce(out.visual_embedding.flatten(0, 1),
                                 out.audio_embedding.flatten(0, 1),
                                 cfg.temperature, cfg.drop_hardest)
            loss = loss + lam_av * loss_av
            logs["loss_av"] = float(loss_av.detach())
            logs["lambda_av"] = lam_av
        if cfg.lambda_cls > 0:
            loss_cls = self.class_loss(out, mix)
            loss = loss + cfg.lambda_cls * loss_cls
            logs["loss_cls"] = float(loss_cls.detach())
        lam = self.lambda_ind(step)
        logs["lambda_ind"] = lam
        if self.adversary_due(step):
            score = critic or self.critic
            dependent, independent = self.critic.make_pairs(
                self.critic.prepare(components), labels=self.component_labels(mix))
            loss_ind = separator_adversarial_loss(score(dependent), score(independent))
            loss = loss + lam * loss_ind
            logs["loss_ind"] = float(loss_ind.detach())
        logs["loss"] = float(loss.detach())
        return loss, logs, components.detach()

    def class_loss(self, out: SeparationOutput, mix: MixBatch) -> torch.Tensor:
        """Auxiliary cross-entropy of each visual query's class logits (B, N, n_classes) against
        the class of the clip it shows, ``mix.query_labels`` (B, N). Shape: → ()."""
        n_classes, top = out.class_logits.shape[-1], int(mix.query_labels.max())
        if top >= n_classes:
            raise ConfigError("model.n_classes", f"is {n_classes}, but the data has label id "
                                                 f"{top}: set the dataset's class count")
        return nn.functional.cross_entropy(out.class_logits.flatten(0, 1),
                                           mix.query_labels.flatten())

    @staticmethod
    def component_labels(mix: MixBatch) -> torch.Tensor:
        """Each component's class id: its target's label. Shape: → (B, N) int64."""
        return mix.labels[:, mix.component_source.to(mix.labels.device)]

    def critic_loss(self, components: torch.Tensor, step: int, critic: Callable | None = None,
                    labels: torch.Tensor | None = None, remember: bool = True,
                    prepared: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Critic objective on the (detached) components of one separator step; then pushes
        them into the memory bank unless ``remember`` is False (all but the last of a batch's
        ``critic_updates``). ``step`` is unused by the loss itself (kept for schedules).
        ``labels``: the components' class ids (``component_labels``), needed by
        ``critic_pairs: label_matched``. ``prepared``: ``critic.prepare(components)`` when the
        caller already has it (the updates of one batch share it; their pairs differ).

        Shape: components (B, N, 256, T), labels (B, N), prepared (B, N, F', T') → (loss (), logs).
        """
        score = critic or self.critic
        x = prepared if prepared is not None else self.critic.prepare(components.detach())
        dependent, independent = self.critic.make_pairs(x, labels=labels)
        s_dep, s_ind = score(dependent), score(independent)
        loss = critic_hinge_loss(self.critic, s_dep, s_ind, self.cfg.critic_hinge_c)
        if remember:
            self.critic.remember(x, labels)
        acc = 0.5 * (float((s_ind > 0).float().mean()) + float((s_dep < 0).float().mean()))
        logs = {"critic_loss": float(loss.detach()),
                "critic_distance": float((s_ind.mean() - s_dep.mean()).detach()),
                "critic_accuracy": acc, "bank_fill": float(len(self.bank))}
        return loss, logs
