"""Validation during training: SDR/SDRi on fixed mixtures of the ``val`` split."""

from __future__ import annotations

import sys

import numpy as np
import torch


def val_length(cfg) -> int:
    """Samples (@ 11025 Hz) of each val clip that validation scores: ``cfg.val_samples``, or one
    training window (``cfg.segment_samples``) when it is 0. Clips shorter are zero-padded."""
    return cfg.val_samples or cfg.segment_samples


def validation_mixtures(val_shards, classes: list[str], method, cfg):
    """Fixed val mixtures: the first val clips in shard order, grouped by a seeded generator.

    ``val_shards``/``classes`` from ``ial.data.loader.scan_split``; ``method`` an ``IALMethod``;
    ``cfg`` the run's ``TrainConfig``. Returns a MixBatch (up to ``val_mixtures`` mixtures of
    ``val_length(cfg)`` samples from each clip's start) or None when the data has no val split.
    """
    from ial.data.loader import ShardEpoch

    if not val_shards:
        print(f"WARNING: no 'val' rows in {cfg.dataset}: no validation SDR, the best "
              "checkpoint is the latest", file=sys.stderr)
        return None
    n = cfg.val_mixtures * method.cfg.n_mix * 2
    epoch = ShardEpoch(val_shards, classes, epoch=0, seed=cfg.seed, rank=0,
                       world_size=1, batch_size=n, num_workers=0, train=False,
                       drop_last=False, segment_samples=val_length(cfg),
                       visual_input=method.model_cfg.visual_input)
    batch = next(iter(epoch))
    clips = batch.clips()
    n_classes = len(set(clips.label.tolist()))
    if n_classes < method.cfg.n_mix:
        from ial.errors import UserError

        raise UserError(f"the val split of dataset {cfg.dataset!r} under {cfg.root} has "
                        f"{clips.label.shape[0]} clips of {n_classes} "
                        f"class(es): validation mixes {method.cfg.n_mix} different classes; "
                        "give it more val clips, or none (then val_fraction of the train "
                        "videos is held out)")
    mix = method.scored_mixtures(clips, torch.Generator().manual_seed(cfg.seed))
    keep = min(cfg.val_mixtures, mix.mixture.shape[0])
    mix.mixture, mix.sources, mix.visual = mix.mixture[:keep], mix.sources[:keep], mix.visual[:keep]
    mix.labels, mix.gains, mix.clip_ids = mix.labels[:keep], mix.gains[:keep], mix.clip_ids[:keep]
    return mix


def validation_sdr(separator: torch.nn.Module, mix, window: int) -> dict[str, float]:
    """Mean SDR and SDRi (dB) of ``separator`` on a MixBatch of validation mixtures.

    Each mixture is separated as ``ial.evaluate`` separates a clip: ``window``-sample windows
    sliding with half overlap (``separate_waveforms``). BSS Eval v3 SDR
    (``ial.evaluate.metrics.score_mixture``: fixed assignment of query i to source i, 512-tap
    distortion filter, scores clipped to ±100 dB); SDRi = SDR − SDR of the mixture itself.
    Components of one target (unsupervised duets) are summed first. Mixtures with a silent
    source are skipped. When the mixtures are longer than one window, ``val_sdr_window`` is also
    given: the SDR of their first window separated alone, what validation scored before
    ``val_samples`` existed. Returns {} when every mixture was skipped.

    ``separate_waveforms`` runs the separator in eval mode without gradients and restores its
    mode. Shape: mix.mixture (M, L) samples @ 11025 Hz, mix.sources (M, S, L).
    """
    metrics = _mean_scores(separator, mix.mixture, mix.sources, mix, window)
    if metrics and mix.mixture.shape[-1] > window:
        first = _mean_scores(separator, mix.mixture[:, :window], mix.sources[..., :window],
                             mix, window)
        if first:
            metrics["val_sdr_window"] = first["val_sdr"]
    return metrics


def _mean_scores(separator, mixture, sources, mix, window: int) -> dict[str, float]:
    """``validation_sdr``'s scores of ``mixture`` (M, L) against ``sources`` (M, S, L)."""
    from ial.evaluate.metrics import score_mixture
    from ial.separate.waveforms import separate_waveforms

    device = next(separator.parameters()).device
    est = separate_waveforms(separator, mixture.to(device), mix.visual.to(device),
                             window=window).cpu().double()  # (M, N, L)
    S = sources.shape[1]
    if est.shape[1] != S:
        est = est.new_zeros(est.shape[0], S, est.shape[2]).index_add(1, mix.component_source, est)
    sdr, sdri = [], []
    for m in range(est.shape[0]):
        scores = score_mixture(sources[m].double().numpy(), mixture[m].double().numpy(),
                               {"model": est[m].numpy()})
        if scores is not None:
            sdr += scores["model"]["sdr"]
            sdri += scores["model"]["sdri"]
    if not sdr:
        return {}
    return {"val_sdr": float(np.mean(sdr)), "val_sdri": float(np.mean(sdri)),
            "val_mixtures": float(len(sdr) // S)}
