"""Benchmark: does the independency adversary help where its authors use it, in unsupervised mode?

The authors' released code trains the critic only in unsupervised mode (their supervised command
runs with λ_ind = 0). This benchmark trains ``ial`` (λ_ind > 0) and ``cms`` (λ_ind = 0) in that
setting on the realistic corpus of ``benchmarks/separation_quality.py`` (the same data, built
or reused under the same ``--work``): each duet is two solo clips of different classes summed
(``method.duets: solo_pairs``), two duets make a mixture, and the separator is asked for four
components, one per player, with only the duets as targets. Nothing but the adversary and L_av
pushes the two players of a duet apart. Then both are evaluated as ``ial.evaluate`` scores every
model (solo pairs of the test classes, each source against its own ground truth), and the table
(with the oracle and mixture rows) and the paired 95 % bootstrap CI of ial − cms are printed. The
last line (the issue's target for the adversary, here in its authors' setting)::

    RESULT unsupervised_ial_minus_cms_sdr=<dB> target>=0.5

``ial`` takes the authors' λ_ind 0.01, not the supervised recipe's 0.1. Everything else is the
realistic recipe (``configs/train/realistic.yaml``) except its class loss
(``method.lambda_cls=0``, ``model.n_classes=0``): the authors' unsupervised loss has none. So the
SDRs here are below the supervised recipe's; the question is the difference. ``--class-loss``
keeps the recipe's class loss, each player's picture scored against its own clip's class (the
class a detector would give its crop; ``ial_unsup_cls`` and ``cms_unsup_cls``): the separation
is still learnt from duet-level targets only. ``--quick``: a tiny corpus and seconds of training
(smoke run).

    python benchmarks/adversary_unsupervised.py --steps 3000 --seed 3 [--class-loss]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.separation_quality import (  # noqa: E402
    prepare_data, print_table, train_and_evaluate, work_folder)
from ial.evaluate.compare import paired_ci, per_source  # noqa: E402

# The authors' λ_ind 0.01, their value in this, their setting. The supervised recipe's 0.1 is ten
# times it because there the adversary's share of the separator's gradient was ~10x smaller than
# the authors' 0.01 gives it here (docs/experiments.md, "λ_ind 0.1").
UNSUPERVISED = ["method.mode=unsupervised", "method.duets=solo_pairs", "method.lambda_ind=0.01"]
NO_CLASS_LOSS = ["method.lambda_cls=0", "model.n_classes=0"]


def runs(class_loss: bool) -> dict[str, list[str]]:
    """The two trainings, by run name → overrides of the realistic recipe."""
    base, suffix = (UNSUPERVISED, "_cls") if class_loss else ([*UNSUPERVISED, *NO_CLASS_LOSS], "")
    return {f"ial_unsup{suffix}": base, f"cms_unsup{suffix}": [*base, "method.lambda_ind=0"]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000,
                   help="training steps of each model (the lr decay follows them)")
    p.add_argument("--seed", type=int, default=3, help="training seed")
    p.add_argument("--corpus-seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=None,
                   help="working folder (default: ./data/bench-quality[-quick], shared with "
                        "separation_quality.py: its corpus, clips and shards are reused)")
    p.add_argument("--class-loss", action="store_true",
                   help="keep the recipe's visual class loss (each player's picture against its "
                        "own clip's class, as a detector's label of its crop)")
    p.add_argument("--quick", action="store_true", help="tiny corpus, seconds of training")
    args = p.parse_args(argv)
    steps = 6 if args.quick else args.steps
    work = work_folder(args.work, args.quick)
    if steps < 1:
        sys.exit(f"Error: --steps {args.steps}: must be >= 1")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    root, _ = prepare_data(work.resolve(), args.corpus_seed, args.quick)
    trainings = runs(args.class_loss)
    results = {name: train_and_evaluate(root, name, overrides, 0, args.seed, args.quick, steps)
               for name, overrides in trainings.items()}
    print_table(results)
    sdr = {n: per_source(r["report"], "model", "sdr") for n, r in results.items()}
    ial, cms = trainings
    mean, lo, hi = paired_ci(sdr[ial], sdr[cms], args.seed)
    extra = ", the visual class loss on each player" if args.class_loss else ""
    print(f"\n(unsupervised: duets of solo pairs{extra}, {steps} steps each, seed {args.seed}; "
          "best checkpoints by validation SDR on solo pairs)")
    print(f"ial - cms (unsupervised): {mean:+.2f} dB SDR, 95 % paired bootstrap CI "
          f"[{lo:+.2f}, {hi:+.2f}]")
    print(f"RESULT unsupervised_ial_minus_cms_sdr={mean:.2f} target>=0.5")
    return {"results": results, "diff": (mean, lo, hi)}


if __name__ == "__main__":
    from ial.errors import UserError

    try:
        main()
    except UserError as exc:  # a bad config, file, bucket: one line, as the ial command does
        sys.exit(f"Error: {exc}")
