"""What a training run's independency critic tells apart, on its validation clips.

The critic is trained to score dependent pairs (two components separated from one mixture) low
and independent pairs (a component and a bank entry, i.e. a component of another mixture) high.
It could do so by what the method wants, the traces one source leaves in the other's estimate,
or by a shortcut. This probe scores, with the run's last committed critic:

- ``dependent``: every ordered pair of two components of one mixture (supervised: the two or
  three sources; unsupervised duets: the four players, of one duet or of the other);
- independent pairs of a component with a component of ANOTHER mixture whose class is
  ``matched`` (the class of one of the component's partners in its own mixture: the class
  make-up of a dependent pair), ``same`` (its own class: a make-up only independent pairs
  have, as supervised mixtures join different classes) or ``other`` (neither). A run on duet
  videos, whose players' classes are not known apart, has one kind, ``any``;

and reports each kind's mean score and its AUC against the dependent pairs (the probability that
an independent pair scores above a dependent one; 0.5: not told apart). Unsupervised runs also
report the dependent pairs of one duet's two players apart (``one_duet``): their sum is all the
loss constrains, so how it is split between them is what only the adversary shapes.
``components``: ``model`` (the separator's), ``oracle`` (the true sources' magnitudes: each
player's own clip for duets built from solo pairs) or ``irm`` (the ideal ratio mask's
components); a critic that reads leakage cannot tell the oracle's pairs apart. Duet videos have
no per-player truth, so they take ``model`` only.

``--gradients BATCHES`` asks instead how hard the adversary pushes the run's separator: the
norm of the separator's gradient from λ_ind × its adversarial term over that of the rest of its
loss, and the cosine between the two, on training-mode steps over validation batches.

Usage: ``python -m ial.training.critic_probe RUN_DIR [--separator RUN_DIR] [--components
model|oracle|irm] [--rounds 4] [--batch-size 32] [--gradients BATCHES] [--root ROOT]``. Only
the validation split is read, never test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterator

import numpy as np
import torch

from ial.errors import UserError

COMPONENTS = ("model", "oracle", "irm")
KINDS = ("matched", "same", "other")


def load_run_state(run_dir: str, engine: str) -> tuple[object, dict, int]:
    """(the run's TrainConfig, the ``engine`` module's state at its last committed tag, the
    step of that tag)."""
    from ial.config import load_config
    from ial.storage import exists, join, open_url, read_text
    from ial.training.config import TrainConfig

    marker = join(run_dir, "deepspeed", "latest.json")
    if not exists(join(run_dir, "config.yaml")) or not exists(marker):
        raise UserError(f"{run_dir}: not a training run with a committed checkpoint (no "
                        "config.yaml or deepspeed/latest.json)")
    cfg = load_config(TrainConfig, join(run_dir, "config.yaml"))
    latest = json.loads(read_text(marker))
    tag = latest["tag"]
    with open_url(join(run_dir, "deepspeed", engine, tag, "mp_rank_00_model_states.pt")) as f:
        state = torch.load(f, map_location="cpu", weights_only=False)["module"]
    return cfg, state, int(latest["step"])


def load_method(run_dir: str, separator_run: str | None = None) -> tuple[object, object, int]:
    """(the run's TrainConfig, its ``IALMethod`` with the separator and the critic of its last
    committed checkpoint, that checkpoint's step). ``separator_run``: take the separator from
    this run instead (the same model config). Raises UserError for a run that trained no
    critic."""
    from ial.method.objective import IALMethod
    from ial.training.config import method_config, model_config
    from ial.training.engines import vectorize_scalar_parameters

    cfg, critic_state, step = load_run_state(run_dir, "critic")
    model_cfg, method_cfg = model_config(cfg), method_config(cfg)
    if method_cfg.lambda_ind == 0:
        raise UserError(f"{run_dir}: method.lambda_ind is 0, the run trained no critic")
    sep_cfg, sep_state, _ = load_run_state(separator_run or run_dir, "separator")
    if model_config(sep_cfg) != model_cfg:
        raise UserError(f"--separator {separator_run}: its model config differs from {run_dir}'s")
    method = IALMethod(model_cfg, method_cfg)
    vectorize_scalar_parameters(method)  # the shapes DeepSpeed saved
    method.separator.load_state_dict(sep_state)
    method.critic.load_state_dict(critic_state)
    return cfg, method, step


def validation_splits(run_dir: str, cfg, root: str | None = None):
    """The run's dataset split into train and val shards, read under ``root`` (default: the root
    the run's config.yaml names); UserError when it has no val clips."""
    from ial.data.loader import list_dataset_shards, split_train_val

    shards = list_dataset_shards(root or cfg.root, cfg.dataset)
    if not shards:  # e.g. the data moved since the run trained
        where = f"--root {root}" if root else "the run's config.yaml; --root reads another"
        raise UserError(f"{run_dir}: no shards of dataset {cfg.dataset!r} under root "
                        f"{root or cfg.root} ({where})")
    splits = split_train_val(shards, cfg.val_fraction)
    if not splits.val:
        raise UserError(f"{run_dir}: dataset {cfg.dataset!r} has no validation clips to probe")
    return splits


def probe_critic(run_dir: str, separator_run: str | None = None, components: str = "model",
                 rounds: int = 4, batch_size: int = 32, seed: int = 0,
                 root: str | None = None) -> dict:
    """Scores and AUCs of the run's critic (see the module doc). ``separator_run``: take the
    separator from this run instead (same model). ``root``: read the clips there, not under the
    root the run trained with (a run moved with its data). Returns {"n_mixtures", "dependent":
    {"mean", "n"}, "matched"/"same"/"other" (or "any"): {"mean", "n", "auc"},
    "same_vs_matched_auc"};
    duets add "dependent_one_duet"/"dependent_two_duets": {"mean", "n", "auc"}."""
    if components not in COMPONENTS:
        raise UserError(f"--components {components!r}: one of {', '.join(COMPONENTS)}")
    cfg, method, _ = load_method(run_dir, separator_run)
    method.eval()
    splits = validation_splits(run_dir, cfg, root)
    duet_videos = method.cfg.mode == "unsupervised" and method.cfg.duets == "videos"
    if components != "model" and duet_videos:
        raise UserError(f"--components {components}: {run_dir} trained on duet videos, whose "
                        "players' own sources are not known; only --components model")
    x, labels, component_source = prepared_components(method, splits, cfg, components, rounds,
                                                      batch_size, seed)
    return pair_scores(method.critic, x, labels, component_source, seed)


@torch.no_grad()
def prepared_components(method, splits, cfg, components: str, rounds: int, batch_size: int,
                        seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Critic inputs of the components of validation mixtures (``rounds`` passes over the clips,
    random windows and pairings), the class each component's query shows (−1: not known) and
    the target each component belongs to. Shape: → (M, N, F', T'), (M, N), (N,)."""
    from ial import signal

    generator = torch.Generator().manual_seed(seed)
    xs, labels, component_source = [], [], None
    for rnd in range(rounds):
        for batch in validation_batches(method, splits, cfg, batch_size, rnd, seed):
            clips = batch.clips()
            mix = method.mixtures(clips, generator)
            out, _, mag = method.separate(mix)
            if components == "model":
                est = out.mask * mag.unsqueeze(1)
            else:  # the true sources on the model's grid, or their ideal ratio masks' components
                est = signal.log_warp(signal.stft(component_sources(mix, clips)).abs())
                if components == "irm":
                    est = est / est.sum(1, keepdim=True).clamp_min(1e-8) * mag.unsqueeze(1)
            xs.append(method.critic.prepare(est))
            labels.append(mix.query_labels)
            component_source = mix.component_source
    return torch.cat(xs), torch.cat(labels), component_source


def validation_batches(method, splits, cfg, batch_size: int, epoch: int,
                       seed: int) -> Iterator:
    """One pass over the validation clips in batches as training draws them (random windows of
    ``cfg.segment_samples``), read as they are asked for; UserError when there are fewer clips
    than one batch."""
    from ial.data.loader import ShardEpoch

    epoch_batches = ShardEpoch(splits.val, splits.classes, epoch=epoch, seed=seed, rank=0,
                               world_size=1, batch_size=batch_size, num_workers=0, train=True,
                               drop_last=True, segment_samples=cfg.segment_samples,
                               visual_input=method.model_cfg.visual_input)
    any_batch = False
    for batch in epoch_batches:
        any_batch = True
        yield batch
    if not any_batch:
        raise UserError(f"fewer than {batch_size} validation clips: nothing to probe "
                        "(a smaller --batch-size mixes fewer at a time)")


def component_sources(mix, clips) -> torch.Tensor:
    """Each component's true source: the targets (supervised), or each player's own clip at its
    duet's gain (duets of solo pairs, whose clip ids read "<id>+<id>"; ids never hold a "+").
    Shape: → (M, N, L) samples."""
    if mix.n_components == mix.sources.shape[1]:
        return mix.sources
    row = {clip_id: i for i, clip_id in enumerate(clips.clip_id)}
    return torch.stack([
        torch.stack([clips.audio[row[player]] * mix.gains[m, s]
                     for s, duet in enumerate(duets) for player in duet.split("+")])
        for m, duets in enumerate(mix.clip_ids)])


@torch.no_grad()
def pair_scores(critic, x: torch.Tensor, labels: torch.Tensor,
                component_source: torch.Tensor | None = None, seed: int = 0,
                per_component: int = 4) -> dict:
    """Scores of dependent pairs and of ``per_component`` independent pairs of each kind per
    component (one kind, ``any``, when the classes are not known: labels −1). With components
    of one target (``component_source`` repeating: duets), also the dependent pairs of one
    duet and of two, apart, each with its AUC against all independent pairs.
    Shape: x (M, N, F', T'), labels (M, N), component_source (N,) (default: all different)."""
    M, N = x.shape[:2]
    target = (torch.arange(N) if component_source is None else component_source.cpu()).tolist()
    flat, flat_labels = x.flatten(0, 1), labels.flatten().cpu().numpy()
    mixture_of = np.repeat(np.arange(M), N)
    rng = np.random.default_rng(seed)

    def score(index_a: list[int], index_b: list[int]) -> np.ndarray:
        a, b = flat[index_a], flat[index_b]
        return torch.cat([critic(torch.stack([a[i:i + 256], b[i:i + 256]], 1))
                          for i in range(0, len(a), 256)]).numpy()

    pairs = [(i, j) for i in range(N) for j in range(N) if i != j]
    dependent = score([m * N + i for m in range(M) for i, _ in pairs],
                      [m * N + j for m in range(M) for _, j in pairs])
    out = {"n_mixtures": M, "dependent": {"mean": float(dependent.mean()), "n": len(dependent)}}
    known = bool((flat_labels >= 0).all())
    independent = []
    for kind in KINDS if known else ("any",):
        first, second = [], []
        for m in range(M):
            for i in range(N):
                own = flat_labels[m * N + i]
                partners = [flat_labels[m * N + j] for j in range(N) if j != i]
                wanted = {"matched": np.isin(flat_labels, partners), "same": flat_labels == own,
                          "other": ~np.isin(flat_labels, partners + [own]),
                          "any": np.ones_like(flat_labels, dtype=bool)}[kind]
                pool = np.flatnonzero(wanted & (mixture_of != m))
                if len(pool):
                    first += [m * N + i] * per_component
                    second += rng.choice(pool, per_component).tolist()
        if first:
            s = score(first, second)
            independent.append(s)
            out[kind] = {"mean": float(s.mean()), "n": len(s), "auc": auc(s, dependent),
                         "scores": s}
    if "same" in out and "matched" in out:  # > 0.5: a shared class reads as "independent"
        out["same_vs_matched_auc"] = auc(out["same"]["scores"], out["matched"]["scores"])
    if len(set(target)) < N and independent:  # duets: a duet's players apart from the other's
        one_duet = np.array([target[i] == target[j] for i, j in pairs] * M)
        pooled = np.concatenate(independent)
        for name, chosen in (("one_duet", one_duet), ("two_duets", ~one_duet)):
            out[f"dependent_{name}"] = {"mean": float(dependent[chosen].mean()),
                                        "n": int(chosen.sum()),
                                        "auc": auc(pooled, dependent[chosen])}
    for kind in KINDS + ("any",):
        out.get(kind, {}).pop("scores", None)
    return out


def adversary_gradient_share(run_dir: str, batches: int = 8, batch_size: int | None = None,
                             seed: int = 0, root: str | None = None) -> dict:
    """How hard the adversary pushes the run's separator at its last committed step (its last
    separator update up to it): on ``batches`` batches of validation clips mixed as in training
    (random windows), the norm of the separator's gradient from λ_ind · (its adversarial term)
    over the norm of the gradient from the rest of its loss (separation, L_av, class loss), and
    the cosine between the two (> 0: the adversary pushes where separation does). The separator
    runs in training mode, on batches of the run's own ``batch_size`` unless one is given, as in
    a training step. ``root``: as ``probe_critic``'s.
    Returns {"step", "lambda_ind", "batches", "batch_size", "share": {"mean", "min", "max"},
    "cosine"}."""
    cfg, method, step = load_method(run_dir)
    splits = validation_splits(run_dir, cfg, root)
    batch_size = batch_size or cfg.batch_size
    step -= step % method.cfg.separator_every  # the last separator update (the authors: 1 in 3)
    method.train()
    params = [p for p in method.separator.parameters() if p.requires_grad]
    unscored = (lambda pairs: torch.zeros(pairs.shape[0]))  # the adversarial term is constant
    # The adversary's gradient is (total − rest), taken with its term scaled by SCALE and divided
    # back: at λ_ind 0.01 it is ~0.3 % of the rest, and a plain float32 difference would keep
    # only two or three of its digits.
    scale = 1000.0
    scaled = (lambda pairs: method.critic(pairs) * scale)

    def gradient(mix, critic) -> torch.Tensor:
        with torch.random.fork_rng(), method.critic_frozen():
            torch.manual_seed(seed)  # the same independent pairs in both calls
            loss = method.separator_loss(mix, step, critic=critic)[0]
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                          for g, p in zip(grads, params)])

    generator = torch.Generator().manual_seed(seed)
    shares, cosines, rnd = [], [], 0
    while len(shares) < batches:
        for batch in itertools.islice(validation_batches(method, splits, cfg, batch_size, rnd,
                                                         seed), batches - len(shares)):
            mix = method.mixtures(batch.clips(), generator)
            rest = gradient(mix, unscored)
            adversary = (gradient(mix, scaled) - rest) / scale
            shares.append(float(adversary.norm() / rest.norm().clamp_min(1e-12)))
            cosines.append(float(torch.nn.functional.cosine_similarity(adversary, rest, 0)))
        rnd += 1
    return {"step": step, "lambda_ind": method.lambda_ind(step), "batches": len(shares),
            "batch_size": batch_size,
            "share": {"mean": float(np.mean(shares)), "min": min(shares), "max": max(shares)},
            "cosine": float(np.mean(cosines))}


def auc(high: np.ndarray, low: np.ndarray) -> float:
    """P(a score of ``high`` > a score of ``low``), ties counting half."""
    diff = high[:, None] - low[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m ial.training.critic_probe",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a training run (checkpoints/<run>) that trained a critic")
    p.add_argument("--separator", default=None,
                   help="take the separator from this run instead (the same model config)")
    p.add_argument("--components", default="model", choices=COMPONENTS,
                   help="what is paired: the separator's components, the true sources, or the "
                        "ideal ratio mask's components")
    p.add_argument("--rounds", type=int, default=4,
                   help="passes over the validation clips (random windows and pairings)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="validation clips mixed together at a time (the validation split needs "
                        "at least this many; default 32, with --gradients the run's own)")
    p.add_argument("--gradients", type=int, default=None, metavar="BATCHES",
                   help="instead, measure how hard the adversary pushes the separator: its share "
                        "of the separator's gradient on BATCHES batches, and their cosine")
    p.add_argument("--root", default=None,
                   help="read the validation clips under this root instead of the one the run's "
                        "config.yaml names (a run moved with its data)")
    a = p.parse_args(argv)
    for name, value in (("--rounds", a.rounds), ("--batch-size", a.batch_size),
                        ("--gradients", a.gradients)):
        if value is not None and value < 1:
            sys.exit(f"Error: {name} {value}: must be >= 1")
    if a.gradients and (a.separator or a.components != "model"):
        sys.exit("Error: --gradients measures the run's own separator: it does not go with "
                 "--separator or --components")
    try:
        if a.gradients:
            res = adversary_gradient_share(a.run_dir, a.gradients, a.batch_size, root=a.root)
        else:
            res = probe_critic(a.run_dir, a.separator, a.components, a.rounds,
                               a.batch_size or 32, root=a.root)
    except UserError as exc:
        sys.exit(f"Error: {exc}")
    (print_gradient_share if a.gradients else print_pair_scores)(a, res)
    return res


def print_gradient_share(a, res: dict) -> None:
    share = res["share"]
    print(f"adversary of {a.run_dir} at step {res['step']} (lambda_ind {res['lambda_ind']:g}), "
          f"{res['batches']} batches of {res['batch_size']} validation clips:")
    print(f"  |gradient of lambda_ind x adversarial term| / |gradient of the rest of the loss| "
          f"= {100 * share['mean']:.2f} % ({100 * share['min']:.2f}-{100 * share['max']:.2f} %)")
    print(f"  cosine between the two gradients {res['cosine']:+.3f} (> 0: the adversary pushes "
          "where the rest of the loss does)")


def print_pair_scores(a, res: dict) -> None:
    print(f"critic of {a.run_dir}, {a.components} components"
          + (f" of {a.separator}'s separator" if a.separator else "")
          + f", {res['n_mixtures']} validation mixtures:")
    print(f"  dependent pairs        mean score {res['dependent']['mean']:+.3f}  "
          f"(n={res['dependent']['n']})")
    for name, what in (("one_duet", "one duet's players"), ("two_duets", "two duets' players")):
        if f"dependent_{name}" in res:
            r = res[f"dependent_{name}"]
            print(f"    of {what:20s} mean score {r['mean']:+.3f}  (n={r['n']})  "
                  f"AUC of the independent pairs vs them {r['auc']:.3f}")
    for kind in KINDS + ("any",):
        if kind in res:
            r = res[kind]
            print(f"  independent, {kind:7s}  mean score {r['mean']:+.3f}  (n={r['n']})  "
                  f"AUC vs dependent {r['auc']:.3f}")
    if "same_vs_matched_auc" in res:
        print(f"  AUC same-class vs matched independent pairs {res['same_vs_matched_auc']:.3f} "
              "(above 0.5: a shared class reads as 'independent', a shortcut)")


if __name__ == "__main__":
    main()
