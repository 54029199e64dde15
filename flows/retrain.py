"""Nightly retraining: ingest new → featurize new → resume from the champion → evaluate → promote.

    prefect deployment run retrain/nightly            (or on its cron schedule, 03:00 UTC)

1. **ingest** the manifest (the ingest skips every clip already ``ok``: only new entries cost work;
   while another ingest of the dataset runs, e.g. a long backfill, the night leaves it out);
2. **featurize** (completed shards are skipped: only new clips become new shards);
3. if the training shards are exactly those the last nightly already trained on (same
   fingerprint, recorded in ``promotions/``), stop here: nothing new to learn, no duplicate work;
4. **train**, resuming from the champion checkpoint (``champion.json``; from scratch the first
   night);
5. **evaluate** the challenger on the fixed held-out set (and the champion too, when its stored
   score was measured on a different version of that set or under another evaluation protocol,
   ``ial.nightly.promotion.scoring_fingerprint``);
6. **promote** the challenger only if it beats the champion's SDR (``ial.nightly.promotion``:
   the pointer is replaced atomically, the decision and both scores recorded under
   ``promotions/``), with the paired 95 % interval of the gain beside it
   (``ial.evaluate.compare``; with ``require_ci`` its lower end must clear ``min_improvement``);
7. a markdown **artifact** summarising the night (also written to ``retrain/<timestamp>.md``).

The stages run as subflows of this flow, with the stage configs named in
``configs/retrain/nightly.yaml`` (``ial.nightly.config.RetrainConfig``); everything but the
orchestration (config, promotion, scores, summary) is plain code in ``ial.nightly``.
"""

from __future__ import annotations

import datetime as dt
import re

from prefect import flow, get_run_logger

from flows.api import fail_on_user_error
from ial.config import save_config, to_dict
from ial.nightly.config import challenger_run_name, load_retrain_config
from ial.nightly.promotion import (promote_if_better, read_champion, scoring_fingerprint,
                                   tree_fingerprint)
from ial.nightly.summary import (count_note, last_trained_fingerprint, overall_sdr, paired_gain,
                                 render_summary)
from ial.storage import Storage, write_text


@flow(name="retrain")
@fail_on_user_error
def retrain_flow(
    config: str | None = "configs/retrain/nightly.yaml",
    overrides: list[str] | None = None,
    root: str | None = None,
    dataset: str | None = None,
    manifest: str | None = None,
    dask_address: str | None = None,
) -> dict:
    """Run one night of retraining (see the module docstring); returns the night's summary.

    Explicit arguments win over the YAML ``config``; ``overrides`` (``key=value``) win over both.
    """
    from flows.evaluate import evaluate_flow
    from flows.featurize import featurize_flow
    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from preprocessing.ingest.run import ingest_lock

    logger = get_run_logger()
    cfg = load_retrain_config(config, overrides, root=root, dataset=dataset, manifest=manifest,
                              dask_address=dask_address)
    store = Storage(cfg.root)
    started = dt.datetime.now(dt.timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    manifest_url = cfg.manifest or store.url("manifests", f"{cfg.dataset}.csv")
    eval_data = cfg.eval_data or store.url("shards", cfg.dataset)
    save_config(cfg, store.url("retrain", f"{stamp}.config.yaml"))
    summary: dict = {"dataset": cfg.dataset, "started_at": started.isoformat(), "skipped": [],
                     "decision": None, "config": to_dict(cfg)}

    # 1-2. Only new manifest entries / new clips cost work (both stages skip what is done). An
    # ingest of the dataset that is running (a long backfill) is left to finish: the night
    # goes on with the clips it has indexed so far.
    busy = ingest_lock(store.root, cfg.dataset).held_by()
    if busy:
        note = f"dataset {cfg.dataset!r} is being ingested already ({busy})"
        logger.warning("Not ingesting tonight: %s", note)
        summary["skipped"].append(f"ingest ({note}; the night uses the clips indexed so far)")
    else:
        summary["ingest"] = ingest_flow(
            manifest=manifest_url, manifest_format=cfg.manifest_format, root=store.root,
            dataset=cfg.dataset, config=cfg.ingest_config, overrides=cfg.ingest_overrides,
            dask_address=cfg.dask_address,
        )
        summary["ingest_note"] = count_note(summary["ingest"], ("new", "ok", "skipped", "failed"))
    summary["featurize"] = featurize_flow(
        root=store.root, dataset=cfg.dataset, config=cfg.featurize_config,
        overrides=cfg.featurize_overrides, dask_address=cfg.dask_address,
    )
    summary["featurize_note"] = count_note(summary["featurize"],
                                           ("written", "skipped", "shards", "rows"))

    # 3. Nothing new since the last nightly decision: no training, no evaluation, no promotion.
    fingerprint = tree_fingerprint(store.url("shards", cfg.dataset), suffix=".parquet")
    summary["train_fingerprint"] = fingerprint
    champion = read_champion(store)
    summary["champion"] = champion.get("checkpoint") if champion else None
    summary["champion_sdr"] = champion.get("sdr") if champion else None
    if fingerprint is None or fingerprint == last_trained_fingerprint(store, cfg.dataset):
        summary["decision"] = "skipped"
        summary["reason"] = ("no training shards yet" if fingerprint is None
                             else "no new training data since the last nightly decision")
        summary["skipped"] += ["train", "evaluate", "promote"]
        logger.info("Nothing new to train on (shards fingerprint %s): skipping.", fingerprint)
        return _finish(store, stamp, summary)

    # 4. Train the challenger, resuming from the champion.
    resume_from = champion.get("checkpoint") if champion else None
    run_name = challenger_run_name(cfg, fingerprint, resume_from)  # a re-run resumes it
    summary["resumed_from"] = resume_from or "scratch (no champion yet)"
    trained = train_flow(
        root=store.root, dataset=cfg.dataset, config=cfg.train_config,
        overrides=[*cfg.train_overrides, f"run_name={run_name}"],
        num_procs=cfg.num_procs, resume_from=resume_from,
    )
    # the run's best export on its validation split (early stopping), else its last one
    challenger = trained.get("best_checkpoint") or trained["checkpoint"]
    summary.update(challenger=challenger, run=run_name,
                   train_resumed_from_step=trained.get("resumed_from_step"))

    # 5. Score both on the same held-out set.
    evaluated = evaluate_flow(
        checkpoint=challenger, data=eval_data, mix=cfg.eval_mix,
        out=store.url("reports", run_name), config=cfg.eval_config, overrides=cfg.eval_overrides,
    )
    challenger_sdr = overall_sdr(evaluated)
    eval_fingerprint = scoring_fingerprint(tree_fingerprint(eval_data, suffix=".parquet"),
                                           evaluated.get("protocol") or {})
    champion_sdr, champion_report = None, None
    if champion is not None:
        if champion.get("eval_fingerprint") == eval_fingerprint and champion.get("sdr") is not None:
            champion_sdr, champion_report = float(champion["sdr"]), champion.get("report_dir")
        else:
            logger.info("Held-out set or evaluation protocol changed since the champion was "
                        "scored: re-scoring it.")
            rescored = evaluate_flow(
                checkpoint=champion["checkpoint"], data=eval_data, mix=cfg.eval_mix,
                out=store.url("reports", f"{run_name}-champion"), config=cfg.eval_config,
                overrides=cfg.eval_overrides,
            )
            champion_sdr, champion_report = overall_sdr(rescored), rescored.get("report_dir")
    else:
        summary["skipped"].append("champion evaluation (no champion yet)")
    gain_ci = paired_gain(evaluated.get("report_dir"), champion_report, logger)

    # 6. Promote only if better; both scores and the decision are recorded.
    decision, record = promote_if_better(
        store, challenger, challenger_sdr, min_improvement=cfg.min_improvement,
        champion_sdr=champion_sdr, gain_ci=gain_ci, require_ci=cfg.require_ci,
        details={"dataset": cfg.dataset, "run": run_name, "eval_data": eval_data,
                 "eval_fingerprint": eval_fingerprint, "train_fingerprint": fingerprint,
                 "report_dir": evaluated.get("report_dir")},
    )
    summary.update(challenger_sdr=decision.challenger_sdr, champion_sdr=decision.champion_sdr,
                   gain_ci=gain_ci, decision=decision.action, reason=decision.reason,
                   record=record["record_url"])
    logger.info("Nightly decision: %s (%s)", decision.action, decision.reason)
    return _finish(store, stamp, summary)


def _finish(store: Storage, stamp: str, summary: dict) -> dict:
    """Write the night's markdown summary and publish it as a Prefect artifact."""
    from prefect.artifacts import create_markdown_artifact

    markdown = render_summary(summary)
    summary["summary_url"] = store.url("retrain", f"{stamp}.md")
    write_text(summary["summary_url"], markdown)
    key = re.sub(r"[^a-z0-9-]+", "-", f"retrain-{summary['dataset']}".lower())
    create_markdown_artifact(markdown, key=key, description="Nightly retraining summary")
    summary["markdown"] = markdown
    return summary
