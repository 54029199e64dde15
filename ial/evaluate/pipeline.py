"""``evaluate(cfg)``: score a checkpoint on the test split of a shards dataset (no Prefect).

Steps: load the model export (``ial.models.export.load_model``) → list the test clips of the shards
(``preprocessing.shards``) → the protocol's mixtures (``protocol.build_mixtures``) → separate each
full 10 s mixture with a sliding window, by default the checkpoint's training window
(``ial.separate.waveforms``: ``separate_waveforms``, ``training_window``; one visual query per
source) → the oracle rows on the same mixtures → SDR/SIR/SAR/SDRi (``metrics.score_mixture``)
→ the mask measures of every row (``masks.rows_mask_measures``: where in the time-frequency plane
each estimate keeps or drops sound) → tables and report (``report.write_report``), uploaded to
``cfg.out``. Scored batches are saved as the run goes (``partial``), so a killed run resumes.

The returned dict (also ``results.json``, minus the per-mixture scores) — keys others rely on:

- ``sdr``: the model's overall mean SDR in dB (the number the nightly retraining compares);
- ``rows``: ``{row: {"sdr", "sir", "sar", "sdri", "sdr_median", "n", "mask_own", "mask_other",
  "mask_shared"}}`` for ``model``, each oracle (``oracle_irm``, ``oracle_ibm``, ...) and
  ``mixture`` (dB, mean over all scored sources; ``n`` = sources; the mask measures are
  fractions, ``ial.evaluate.masks``);
- ``per_class``: ``{class: {row: {"sdr", "sir", "sar", "sdri", "n"}}}`` (sources of that class);
- ``per_pair``: ``{class: {other class: {"sdri", "n"}}}``: the model's mean SDRi of a class's
  sources in the mixtures that also hold the other class (which pairs it cannot tell apart);
- ``counts``: ``mixtures``, ``evaluated``, ``skipped_silent``, ``sources``, ``classes``,
  ``test_clips``, ``resumed`` (mixtures whose scores a killed run had saved, ``partial``);
  ``skipped``: the skipped mixtures and why;
- ``protocol``, ``metric``, ``checkpoint`` (url, sha256 of the file scored, model_name, run,
  step, lineage), ``data``,
  ``report_dir``, ``files``, ``config``, ``seconds``.
"""

from __future__ import annotations

import collections
import os
import posixpath
import tempfile
import time

import numpy as np
import torch

from ial.config import dump_yaml, to_dict
from ial.errors import UserError
from ial.evaluate.config import EvalConfig
from ial.evaluate.masks import MASK_MEASURES, rows_mask_measures
from ial.evaluate.metrics import score_mixture, silent_sources
from ial.evaluate.oracle import oracle_estimates
from ial.evaluate.partial import PartialResults, partial_key
from ial.evaluate.protocol import MixtureSpec, build_mixtures, mix_sources
from ial.evaluate.report import METRICS, Example, write_report
from ial.separate.waveforms import separate_waveforms, training_window
from ial.signal import CLIP_SECONDS, SAMPLE_RATE
from ial.storage import DEFAULT_ROOT, Storage, exists, join, upload_file

MODEL_ROW = "model"
MIXTURE_ROW = "mixture"


class EvaluationError(UserError, ValueError):
    """The checkpoint or the data cannot be evaluated (the message names the file and why)."""


# ------------------------------------------------------------------------------ inputs

def load_checkpoint(url: str, device: str = "cpu"):
    """``(model, meta)`` via ``ial.models.export.load_model``; every failure as EvaluationError."""
    from ial.models.export import CheckpointError, load_model

    try:
        model, meta = load_model(url, map_location="cpu")
    except CheckpointError as exc:
        raise EvaluationError(f"checkpoint: {exc}") from None
    return model.to(device).eval(), meta


def split_data_url(data: str) -> tuple[Storage, str]:
    """``<root>/shards/<dataset>`` → ``(Storage(root), dataset)``."""
    url = data.rstrip("/")
    dataset = posixpath.basename(url)
    parent = posixpath.dirname(url)
    if posixpath.basename(parent) != "shards" or not dataset:
        raise EvaluationError(f"data {data!r}: expected a shards dataset dir "
                              "<root>/shards/<dataset> (e.g. ./data/shards/demo)")
    return Storage(posixpath.dirname(parent) or "."), dataset


def scan_clips(data: str, split: str) -> tuple[dict[str, list[str]], dict[str, tuple[str, int]]]:
    """The ``split`` clips of a shards dataset: ``(clips_by_class, clip_id → (shard url, row))``.

    Reads only the clip_id/label/split columns. Raises EvaluationError naming the data URL (or
    the shard) when nothing usable is there.
    """
    from ial.parquet_reading import read_parquet
    from preprocessing.shards import list_shards

    root, dataset = split_data_url(data)
    if root.remote:  # a missing bucket or refused credentials: one clear line
        root.check(write=False, what="root of --data")
    if not exists(root.url("shards", dataset)):
        raise EvaluationError(f"data {data!r}: no such directory")
    shards = list_shards(root, dataset)
    if not shards:
        raise EvaluationError(f"data {data!r}: no complete shards (no _stats/shard-*.json; "
                              "run `ial featurize` first)")
    by_class: dict[str, list[str]] = collections.defaultdict(list)
    where: dict[str, tuple[str, int]] = {}
    for url in shards:
        try:
            table = read_parquet(url, columns=["clip_id", "label", "split"])
        except Exception as exc:  # noqa: BLE001 - any unreadable shard gets one clear message
            raise EvaluationError(f"shard {url}: not a readable feature shard "
                                  f"({type(exc).__name__}: {exc})") from None
        cols = table.to_pydict()
        for row, (clip, label, s) in enumerate(zip(cols["clip_id"], cols["label"], cols["split"])):
            if s == split and label and clip not in where:
                where[clip] = (url, row)
                by_class[label].append(clip)
    if not where:
        raise EvaluationError(f"data {data!r}: no clips of split {split!r} in {len(shards)} "
                              "shard(s)")
    return dict(by_class), where


def load_clips(wanted: set[str], where: dict[str, tuple[str, int]]) -> dict:
    """Decode the wanted clips (``ClipFeatures``), reading each shard once (validated)."""
    from preprocessing.clip_index import SchemaError
    from preprocessing.shard_schema import decode_row
    from preprocessing.shards import read_shard

    by_shard: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    for clip in wanted:
        url, row = where[clip]
        by_shard[url].append((row, clip))
    clips = {}
    for url, rows in sorted(by_shard.items()):
        try:
            table = read_shard(url)
        except SchemaError as exc:
            raise EvaluationError(f"shard: {exc}") from None
        rows.sort()
        picked = table.take([r for r, _ in rows]).to_pylist()
        for (_, clip), record in zip(rows, picked):
            clips[clip] = decode_row(record)
    return clips


def check_visual(meta: dict, clip) -> None:
    """The stored frame features must be what the model takes."""
    cfg = meta.get("model_cfg")
    if cfg is None:
        return
    if cfg.visual_input == "frames":  # the shards' JPEG frames go through its own trunk
        return
    feats = clip.frame_features
    problem = (f"expects (K, C, H, W), got {feats.ndim} axes" if feats.ndim != 4
               else cfg.feature_channels_problem(feats.shape[1]))
    if problem:
        raise EvaluationError(
            f"clip {clip.clip_id}: frame features of shape {tuple(feats.shape)} do not fit model "
            f"{meta.get('model_name')!r} ({problem}); the shards and the checkpoint come from "
            "different featurizer settings")


def run_name(checkpoint: str, meta: dict) -> str:
    """The checkpoint's run name: lineage ``run``, else the directory of ``.../<run>/model.pt``."""
    run = (meta.get("lineage") or {}).get("run")
    if run:
        return str(run)
    parts = checkpoint.rstrip("/").split("/")
    parent = parts[-2] if len(parts) > 1 else "model"
    if parent == "best" and len(parts) > 2:
        return f"{parts[-3]}-best"
    return parent


def default_out(checkpoint: str, meta: dict) -> str:
    """``<root>/reports/<run>/`` where the checkpoint is ``<root>/checkpoints/<run>/...``."""
    url = checkpoint.rstrip("/")
    marker = "/checkpoints/"
    if marker in url:
        root = url.split(marker, 1)[0]
    elif url.startswith("checkpoints/"):
        root = "."
    else:
        root = DEFAULT_ROOT
    return join(Storage(root).root, "reports", run_name(checkpoint, meta))


# ------------------------------------------------------------------------------ scoring

def _separate(model, batch: list[tuple[np.ndarray, np.ndarray]], cfg: EvalConfig,
              window: int) -> np.ndarray:
    """``window`` in samples. Shape: B × (mixture (L,), visual (N, K, C, H, W)) → estimates
    (B, N, L) float64."""
    mixture = torch.from_numpy(np.stack([m for m, _ in batch])).to(cfg.device)
    visual = torch.from_numpy(np.stack([v for _, v in batch])).to(cfg.device)
    with torch.no_grad():
        est = separate_waveforms(model, mixture, visual, window=window, hop=cfg.window_hop,
                                 taper=cfg.window_taper)
    return est.detach().to("cpu", torch.float64).numpy()


def _score_batch(model, chunk: list[MixtureSpec], clips: dict, cfg: EvalConfig, window: int,
                 visual_input: str, row_names: list[str], want_examples: int
                 ) -> tuple[list[dict], list[dict], list[Example]]:
    """Separate and score one batch of mixtures: ``(records, skipped, examples)``.

    ``records``: one per mixture, in order (``scores`` None for a mixture skipped for a silent
    reference, which ``skipped`` names); ``examples``: the first ``want_examples`` scored
    mixtures with their signals and masks, for the report's figures and stems."""
    from ial.data.loader import visual_of

    records, skipped, examples, prepared = [], [], [], []
    for spec in chunk:
        record = {"index": spec.index, "clip_ids": list(spec.clip_ids),
                  "labels": list(spec.labels), "scores": None}
        records.append(record)
        refs, mixture = mix_sources([clips[c].audio for c in spec.clip_ids])
        if silent_sources(refs, cfg.silent_db).any():  # not scored (docs/evaluation.md)
            skipped.append({"index": spec.index, "clip_ids": list(spec.clip_ids),
                            "reason": f"silent reference (RMS < {cfg.silent_db} dBFS)"})
            continue
        visual = np.stack([visual_of(clips[c], visual_input) for c in spec.clip_ids])
        prepared.append((spec, record, refs, mixture, visual))
    if not prepared:
        return records, skipped, examples
    model_est = _separate(model, [(m, v) for *_, m, v in prepared], cfg, window)
    for (spec, record, refs, mixture, _), est in zip(prepared, model_est):
        oracles = oracle_estimates(list(cfg.oracles), refs, mixture)
        estimates = {MODEL_ROW: est, **{n: e for n, (e, _) in oracles.items()}}
        scores = score_mixture(refs, mixture, estimates, cfg.silent_db, cfg.clamp_db)
        as_mixture = np.repeat(mixture[None], len(refs), axis=0)
        measures, effective = rows_mask_measures({**estimates, MIXTURE_ROW: as_mixture},
                                                 refs, mixture)
        record["scores"] = {r: {**scores[r], **measures[r]} for r in row_names}
        if len(examples) < want_examples:
            masks = {MODEL_ROW: effective[MODEL_ROW], **{n: mk for n, (_, mk) in oracles.items()}}
            examples.append(Example(spec.index, spec.labels, spec.clip_ids, mixture, refs,
                                    estimates, masks))
    return records, skipped, examples


def aggregate(mixtures: list[dict], row_names: list[str]) -> tuple[dict, dict]:
    """Overall and per-class means of the scored mixtures' per-source scores; the overall
    rows also hold the means of the mask measures (``ial.evaluate.masks``, None values left
    out)."""
    overall: dict = {}
    per_class: dict = collections.defaultdict(dict)
    scored = [m for m in mixtures if m["scores"] is not None]
    for row in row_names:
        values = {k: [v for m in scored for v in m["scores"][row].get(k, []) if v is not None]
                  for k in (*METRICS, *MASK_MEASURES)}
        n = len(values["sdr"])
        overall[row] = {k: (float(np.mean(v)) if v else None) for k, v in values.items()}
        overall[row]["sdr_median"] = float(np.median(values["sdr"])) if n else None
        overall[row]["n"] = n
        classes: dict = collections.defaultdict(lambda: {k: [] for k in METRICS})
        for m in scored:
            for i, label in enumerate(m["labels"]):
                for k in METRICS:
                    classes[label][k].append(m["scores"][row][k][i])
        for label in sorted(classes):
            vals = classes[label]
            per_class[label][row] = {k: float(np.mean(vals[k])) for k in METRICS}
            per_class[label][row]["n"] = len(vals["sdr"])
    return overall, dict(sorted(per_class.items()))


def pair_sdri(mixtures: list[dict], row: str = MODEL_ROW) -> dict:
    """``{class: {other class: {"sdri", "n"}}}``: mean SDRi (dB) of ``row``'s estimates of a class's
    sources in the scored mixtures that also hold the other class (n = such sources)."""
    values: dict = collections.defaultdict(lambda: collections.defaultdict(list))
    for m in mixtures:
        if m["scores"] is None:
            continue
        for i, label in enumerate(m["labels"]):
            for other in {o for j, o in enumerate(m["labels"]) if j != i and o != label}:
                values[label][other].append(m["scores"][row]["sdri"][i])
    return {label: {other: {"sdri": float(np.mean(v)), "n": len(v)}
                    for other, v in sorted(values[label].items())}
            for label in sorted(values)}


def _upload(local_dir: str, files: list[str], out: str) -> None:
    for rel in files:  # results.json is last: its presence marks a complete report
        upload_file(os.path.join(local_dir, rel), join(out, rel))


def evaluate(cfg: EvalConfig, progress: bool = True) -> dict:
    """Run the evaluation described by ``cfg`` (see the module docstring); returns the summary."""
    from tqdm.auto import tqdm

    from ial.runtime import torch_device

    t0 = time.monotonic()
    cfg.device = torch_device(cfg.device, "evaluate device")
    model, meta = load_checkpoint(cfg.checkpoint, cfg.device)
    by_class, where = scan_clips(cfg.data, cfg.split)
    specs = build_mixtures(by_class, cfg.mix, cfg.n_per_combination, cfg.seed, cfg.max_mixtures)
    clips = load_clips({c for s in specs for c in s.clip_ids}, where)
    check_visual(meta, next(iter(clips.values())))
    visual_input = getattr(meta.get("model_cfg"), "visual_input", "features")
    window = cfg.window or training_window(meta)
    out = (cfg.out or default_out(cfg.checkpoint, meta)).rstrip("/")
    where = "report directory (--out)" if cfg.out else "report directory"
    out = Storage(out).check(what=where).root  # before any scoring: a bad --out fails at once
    row_names = [MODEL_ROW, *cfg.oracles, MIXTURE_ROW]

    partial = PartialResults(out, partial_key(cfg, meta.get("sha256"), window), cfg.resume)
    mixtures: list[dict] = []
    examples: list[Example] = []
    skipped: list[dict] = []
    resumed = 0
    bar = tqdm(total=len(specs), desc="evaluate", unit="mix", disable=not progress)
    for start in range(0, len(specs), cfg.batch_size):
        chunk: list[MixtureSpec] = specs[start:start + cfg.batch_size]
        saved = partial.batches.get(start)
        if saved is not None and len(examples) >= cfg.num_examples:  # scored by a killed run
            records, chunk_skipped = saved["records"], saved["skipped"]
            resumed += len(records)
        else:  # (the report's examples are always the first mixtures, separated again)
            records, chunk_skipped, new = _score_batch(model, chunk, clips, cfg, window,
                                                       visual_input, row_names,
                                                       cfg.num_examples - len(examples))
            examples += new
            if saved is None:  # a saved batch separated again for the examples stays as saved
                partial.add(start, records, chunk_skipped)
        mixtures += records
        skipped += chunk_skipped
        bar.update(len(chunk))
    bar.close()
    partial.flush()

    overall, per_class = aggregate(mixtures, row_names)
    lineage = meta.get("lineage") or {}
    results = {
        "sdr": overall[MODEL_ROW]["sdr"],
        "rows": overall,
        "per_class": per_class,
        "per_pair": pair_sdri(mixtures),
        "counts": {"mixtures": len(specs), "evaluated": len(specs) - len(skipped),
                   "skipped_silent": len(skipped), "sources": overall[MODEL_ROW]["n"],
                   "classes": len(by_class), "test_clips": len(where),
                   "resumed": resumed},
        "skipped": skipped,
        "protocol": {"split": cfg.split, "mix": cfg.mix, "n_per_combination": cfg.n_per_combination,
                     "seed": cfg.seed, "max_mixtures": cfg.max_mixtures,
                     "combinations": len({s.labels for s in specs}),
                     "clip_seconds": CLIP_SECONDS, "sample_rate": SAMPLE_RATE,
                     "window_samples": window, "window_hop": cfg.window_hop,
                     "mixing": "reference_i = clip_i; mixture = sum of references"},
        "metric": {"implementation": "bss_eval_sources v3 (fast_bss_eval 0.1.4 algorithm, "
                                     "float64, 512-tap filter), cross-checked against mir_eval",
                   "permutation": "fixed (estimate i = visual query of source i)",
                   "silent_db": cfg.silent_db, "clamp_db": cfg.clamp_db},
        "checkpoint": {"url": cfg.checkpoint, "sha256": meta.get("sha256"),
                       "model_name": meta.get("model_name"),
                       "run": run_name(cfg.checkpoint, meta), "step": lineage.get("step"),
                       "lineage": lineage, "metrics": meta.get("metrics")},
        "data": cfg.data,
        "report_dir": out,
        "config": to_dict(cfg),
    }
    with tempfile.TemporaryDirectory(prefix="ial-report-") as tmp:
        results["seconds"] = round(time.monotonic() - t0, 2)
        with open(os.path.join(tmp, "config.yaml"), "w") as f:
            f.write(dump_yaml(cfg))  # the run's config, beside its report
        files = ["config.yaml", *write_report(tmp, results, mixtures, examples)]
        results["files"] = files
        _upload(tmp, files, out)
    partial.remove_all()  # the report is complete: nothing left to resume
    return results
