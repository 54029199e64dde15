"""Self-describing model exports: ``model.pt`` holds everything needed to rebuild the separator.

``export_model`` writes (atomically, local or ``s3://``) one ``torch.save`` dict::

    {
      "format": "ial-model", "format_version": 1,
      "model_name": "ial_cms",               # key in ial.models.MODELS
      "model_config": {...},                 # ModelConfig as plain data (constructor args)
      "state_dict": {...},                   # separator weights (CPU tensors)
      "versions": {"ial", "torch", "deepspeed", "python"},
      "lineage": {"git_sha", "run", "step", "configs", "shards", ...},
      "metrics": {"val_sdr": ..., ...},      # validation metrics at export time
    }

Read back (``read_export``, ``load_model``'s meta), it also has ``sha256``: the digest of the
file's bytes, so a report can say which exact file it scored.

``load_model(url)`` rebuilds it with nothing else: ``model, meta = load_model("…/model.pt")``.
The DeepSpeed state for exact resume lives beside it (``deepspeed/``), not in this file.
"""

from __future__ import annotations

import hashlib
import io
import platform
import zipfile
from importlib import metadata
from typing import Any

import torch

from ial.errors import UserError
from ial.storage import Storage, atomic_write, exists, is_remote, isdir, join, read_bytes

FORMAT = "ial-model"
FORMAT_VERSION = 1


class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, not an IAL export, or does not match its model."""


def software_versions() -> dict[str, str]:
    """Versions of the packages a model export depends on."""

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {"ial": version("ial"), "torch": str(torch.__version__),
            "deepspeed": version("deepspeed"), "python": platform.python_version()}


def export_model(url: str, model: torch.nn.Module, model_cfg: Any, lineage: dict,
                 metrics: dict) -> str:
    """Write the self-describing export of ``model`` to ``url`` (atomically); returns ``url``.

    ``model_cfg`` is the ``ModelConfig`` the model was built from; ``lineage`` says where it comes
    from (git sha, configs, shard list, step, run id); ``metrics`` its validation metrics.
    """
    from ial.config import to_dict

    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_name": model_cfg.name,
        "model_config": to_dict(model_cfg),
        "state_dict": state,
        "versions": software_versions(),
        "lineage": dict(lineage),
        "metrics": dict(metrics),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_write(url, "wb") as f:
        f.write(buffer.getvalue())
    return url


def read_export(url: str, map_location: str | torch.device = "cpu") -> dict:
    """The raw export dict of ``url``, checked to be an IAL model export, plus ``sha256``: the
    hex digest of the bytes read (which exact file a report scored)."""
    url = str(url)
    if not exists(url):
        if is_remote(url):  # a missing bucket or refused keys say so, not "no such file"
            Storage(url).check(write=False, what="checkpoint")
        raise CheckpointError(f"{url}: no such checkpoint file")
    if isdir(url):
        raise CheckpointError(directory_hint(url))
    data = read_bytes(url)
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise CheckpointError(f"{url}: not an IAL model export (not a torch.save archive: "
                              f"{len(data)} bytes, truncated or another kind of file)")
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise CheckpointError(f"{url}: not an IAL model export (torch.load cannot read it: "
                              f"{load_failure(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{url}: not an IAL model export (no 'format: {FORMAT}' entry; "
                              "a DeepSpeed state directory is not an export — use its model.pt)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{url}: export format {payload['format_version']} is newer than "
                              f"this code reads ({FORMAT_VERSION}); upgrade ial")
    payload["sha256"] = hashlib.sha256(data).hexdigest()
    return payload


def directory_hint(url: str) -> str:
    """What to pass instead of the directory ``url``: the exports a training run writes in its
    directory (``best/model.pt``, best by validation; ``model.pt``, the latest), those present."""
    in_best = url.rstrip("/").rsplit("/", 1)[-1] == "best"  # a run's best/ holds one export
    exports = {"best/model.pt": "best by validation",
               "model.pt": "best by validation" if in_best else "the latest step"}
    found = [f"{join(url, name)} ({why})" for name, why in exports.items()
             if exists(join(url, name))]
    if not found:
        return f"{url}: a directory, not a model export (no model.pt in it)"
    return f"{url}: a directory, not a model export; pass one of its exports: {', '.join(found)}"


def load_failure(exc: Exception) -> str:
    """Why ``torch.load`` failed, in one line: its messages run to a dozen lines of advice (for a
    file holding Python objects: to load it with ``weights_only=False``, which runs its code)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    return f"{type(exc).__name__}: {line.split('. ')[0][:200]}"


def load_model(url: str, map_location: str | torch.device = "cpu"):
    """Rebuild the separator exported at ``url``. Returns ``(model, meta)``, model in eval mode.

    ``meta`` is the export without its weights: model_name, model_config (plain dict), versions,
    lineage, metrics, plus ``model_cfg`` (the ``ModelConfig``) and ``url``. Raises
    ``CheckpointError`` naming the file when it is missing, not an IAL export, names an unknown
    model, or its weights do not fit the model its config builds.
    """
    from ial.config import ConfigError, from_dict
    from ial.models import MODELS, ModelConfig, build_model

    payload = read_export(url, map_location)
    name = payload.get("model_name")
    if name not in MODELS:
        raise CheckpointError(f"{url}: unknown model {name!r}; this code knows: "
                              f"{', '.join(MODELS.names())}")
    try:
        cfg = from_dict(ModelConfig, payload["model_config"], source=str(url))
    except ConfigError as exc:
        raise CheckpointError(f"{url}: its model config does not load: {exc}") from None
    model = build_model(cfg)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{url}: weights do not match model {name!r}: {exc}") from None
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    meta["model_cfg"] = cfg
    meta["url"] = str(url)
    return model, meta


def describe_export(meta: dict) -> list[str]:
    """What an export (``read_export``'s dict, weights included or not) says of itself, as lines
    ``<what>  <value>`` for a person to read (``ial info``). Fields an older export lacks are
    said to be missing, not guessed."""
    lineage = meta.get("lineage") or {}
    state = meta.get("state_dict") or {}
    values = sum(int(t.numel()) for t in state.values() if hasattr(t, "numel"))
    model = f"{meta.get('model_name')} (export format {meta.get('format_version')})"
    if state:
        model += f", {values / 1e6:.2f} M values in {len(state)} tensors (weights and buffers)"
    world = lineage.get("world_size")
    run = (f"run {lineage.get('run')!r}, step {lineage.get('step')}, "
           f"{world} process{'' if world == 1 else 'es'}, git {str(lineage.get('git_sha'))[:10]}")
    if lineage.get("init_from"):
        run += f", initialised from {lineage['init_from']}"
    classes = lineage.get("classes") or []
    data = (f"dataset {lineage.get('dataset')!r} (digest {lineage.get('data_digest')}), "
            f"{len(lineage.get('shards') or [])} shards, {len(classes)} classes"
            + (f": {', '.join(map(repr, classes[:8]))}" if classes else "")
            + (f", … ({len(classes) - 8} more)" if len(classes) > 8 else ""))
    val = lineage.get("validation") or {}
    if not val:
        validation = "not recorded"
    elif val.get("carved_from_train"):
        validation = (f"{val.get('clips')} clips held out of train ({val.get('carved_videos')} "
                      f"videos, val_fraction {val.get('val_fraction')})")
    else:
        validation = f"{val.get('clips')} clips of the dataset's val split"
    feat = lineage.get("featurize") or {}
    features = (f"featurizer {feat.get('featurizer_version')}, config hash "
                f"{str(feat.get('config_hash'))[:12]}, visual weights {feat.get('visual_weights')}"
                if feat else "not recorded")
    host = lineage.get("machine")
    machine = (f"{host.get('cpu')}, {host.get('cpus')} CPUs, {host.get('arch')}, "
               f"GPU {host.get('gpu') or 'none'}" if host else "not recorded")
    versions = ", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items())
    metrics = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) and not v.is_integer()
                        else f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in (meta.get("metrics") or {}).items()) or "none"
    rows = [("file", f"{meta.get('url', '')} (sha256 {str(meta.get('sha256'))[:12]}…)"),
            ("model", model), ("trained", run), ("data", data), ("validation", validation),
            ("features", features), ("machine", machine), ("software", versions),
            ("val metrics", metrics)]
    return [f"{name:12s} {value}" for name, value in rows]
