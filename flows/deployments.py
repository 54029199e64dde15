"""Every Prefect deployment of the project, declared in one place.

``ial serve`` serves them all from one process (``prefect.serve``); ``prefect.yaml`` declares the
same names for ``prefect deploy`` onto a work pool. Users run them by name::

    prefect deployment run ingest/vggsound --param manifest=s3://bucket/manifests/vggsound.csv
    prefect deployment run evaluate/default --param checkpoint=... --param data=...

The nightly retraining (``retrain/nightly``) runs on a cron schedule, 03:00 UTC by default.

Flows are imported lazily, by module, when a deployment is built: listing the names needs no
Prefect flow import, and a flow module that is missing or broken gives an error naming the
deployment and the module.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

DEFAULT_CRON = "0 3 * * *"
DEFAULT_TIMEZONE = "UTC"
REPO_ROOT = Path(__file__).resolve().parents[1]


def config_path(relative: str) -> str:
    """A config file under ``configs/``: absolute when the source tree has it, else relative to
    cwd."""
    candidate = REPO_ROOT / "configs" / relative
    return str(candidate) if candidate.exists() else f"configs/{relative}"


@dataclasses.dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: ``<flow_name>/<name>`` runs ``module:attr`` with ``parameters``."""

    flow_name: str
    name: str
    flow_ref: str  # "module:attribute" of the @flow
    parameters: dict[str, Any]
    description: str
    nightly: bool = False  # on the retraining cron schedule
    takes_root: bool = True  # the flow has a ``root`` parameter
    takes_dask: bool = False  # the flow has a ``dask_address`` parameter

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


def _ingest(name: str, fmt: str) -> DeploymentSpec:
    return DeploymentSpec(
        "ingest", name, "flows.ingest:ingest_flow",
        {"manifest_format": fmt, "dataset": name, "config": config_path(f"ingest/{name}.yaml")},
        f"Download and slice {name} clips (yt-dlp + ffmpeg) from a manifest; "
        "needs --param manifest=URL.",
        takes_dask=True,
    )


SPECS: tuple[DeploymentSpec, ...] = (
    _ingest("vggsound", "vggsound"),
    _ingest("audioset", "audioset"),
    _ingest("music", "music"),
    DeploymentSpec(
        "featurize", "default", "flows.featurize:featurize_flow", {},
        "Featurize ingested clips into Parquet shards (completed shards are skipped).",
        takes_dask=True,
    ),
    DeploymentSpec(
        "train", "default", "flows.train:train_flow", {},
        "Train the separator + independency critic on the shards (DeepSpeed).",
    ),
    DeploymentSpec(
        "evaluate", "default", "flows.evaluate:evaluate_flow", {},
        "Score a checkpoint (SDR/SIR/SAR); needs --param checkpoint=URL --param data=URL.",
        takes_root=False,
    ),
    DeploymentSpec(
        "retrain", "nightly", "flows.retrain:retrain_flow",
        {"config": config_path("retrain/nightly.yaml")},
        "Nightly: ingest new entries, featurize new clips, resume from the champion, evaluate, "
        "promote only if better.",
        nightly=True, takes_dask=True,
    ),
)


def deployment_names() -> list[str]:
    """``["ingest/vggsound", ..., "retrain/nightly"]`` (no flow is imported)."""
    return [spec.full_name for spec in SPECS]


def load_flow(spec: DeploymentSpec):
    """Import the flow of ``spec``; an ImportError names the deployment and the module."""
    module_name, attr = spec.flow_ref.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"deployment {spec.full_name!r} needs the flow module {module_name!r}, "
            f"which could not be imported: {exc}"
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(
            f"deployment {spec.full_name!r}: module {module_name!r} has no flow {attr!r}"
        ) from None


def select(only: list[str] | tuple[str, ...] | None = None) -> list[DeploymentSpec]:
    """The specs named in ``only`` (full names, or a flow name for all its deployments); all
    when empty."""
    if not only:
        return list(SPECS)
    chosen = []
    for name in only:
        matches = [s for s in SPECS if name in (s.full_name, s.flow_name)]
        if not matches:
            raise ValueError(f"unknown deployment {name!r}; known: {', '.join(deployment_names())}")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def check_timezone(name: str) -> None:
    """A ValueError in one line unless ``name`` is an IANA timezone (``Europe/Paris``): the
    schedule's own check is pydantic's paragraph."""
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r} (an IANA name, e.g. UTC or "
                         "Europe/Paris)") from None


def build_deployments(
    only: list[str] | tuple[str, ...] | None = None,
    cron: str = DEFAULT_CRON,
    timezone: str = DEFAULT_TIMEZONE,
    root: str | None = None,
    dask_address: str | None = None,
    retrain_config: str | None = None,
    work_pool_name: str | None = None,
) -> list:
    """Prefect ``RunnerDeployment`` objects for ``serve()`` (or ``.apply()`` onto a work pool).

    ``root`` / ``dask_address`` become default parameters of every deployment that takes them
    (a run can still override them with ``--param``). ``cron``/``timezone`` schedule the nightly
    retraining; ``retrain_config`` replaces its YAML config.
    """
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from ial.nightly.config import load_retrain_config

    check_timezone(timezone)
    deployments = []
    for spec in select(only):
        flow = load_flow(spec)
        parameters = dict(spec.parameters)
        if root is not None and spec.takes_root:
            parameters["root"] = root
        if dask_address is not None and spec.takes_dask:
            parameters["dask_address"] = dask_address
        if spec.nightly and retrain_config is not None:
            parameters["config"] = retrain_config
        if spec.nightly:  # read now (a ConfigError naming the file), not first at night
            load_retrain_config(parameters.get("config"))
        schedule = Cron(cron, timezone=timezone) if spec.nightly else None
        kwargs = dict(
            name=spec.name, parameters=parameters, description=spec.description,
            tags=["ial", spec.flow_name], schedule=schedule,
        )
        if spec.nightly:  # two nights never race on the champion pointer
            kwargs["concurrency_limit"] = 1
        if work_pool_name:
            kwargs["work_pool_name"] = work_pool_name
        else:
            # Runs import the flow by module path, so `ial serve` works from any directory.
            kwargs["entrypoint_type"] = EntrypointType.MODULE_PATH
        deployments.append(flow.to_deployment(**kwargs))
    return deployments
