"""flows/deployments.py and `ial serve`: names, schedules, parameters, clear errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from flows.deployments import (
    DEFAULT_CRON,
    SPECS,
    DeploymentSpec,
    build_deployments,
    deployment_names,
    load_flow,
    select,
)

EXPECTED = ["ingest/vggsound", "ingest/audioset", "ingest/music", "featurize/default",
            "train/default", "evaluate/default", "retrain/nightly"]


def test_every_deployment_is_declared_once():
    assert deployment_names() == EXPECTED
    assert [s.full_name for s in select(["ingest"])] == EXPECTED[:3]
    assert [s.full_name for s in select(["retrain/nightly", "retrain"])] == ["retrain/nightly"]
    with pytest.raises(ValueError, match="unknown deployment 'ingest/nope'"):
        select(["ingest/nope"])


def test_a_missing_flow_module_names_the_deployment_and_module():
    spec = DeploymentSpec("ingest", "x", "flows.no_such_module:ingest_flow", {}, "")
    needs = "'ingest/x' needs the flow module 'flows.no_such_module'"
    with pytest.raises(ImportError, match=needs):
        load_flow(spec)
    spec = DeploymentSpec("retrain", "x", "flows.retrain:no_such_flow", {}, "")
    with pytest.raises(ImportError, match="has no flow 'no_such_flow'"):
        load_flow(spec)


def test_every_flow_module_is_importable_and_flow_names_match():
    for spec in SPECS:
        flow = load_flow(spec)
        assert flow.name == spec.flow_name, spec.full_name


def test_nightly_deployment_is_on_the_cron_schedule_with_parameters(tmp_path):
    (nightly,) = build_deployments(only=["retrain/nightly"], root="s3://bucket/ial",
                                   dask_address="tcp://127.0.0.1:8786")
    assert (nightly.flow_name, nightly.name) == ("retrain", "nightly")
    (schedule,) = nightly.schedules
    assert schedule.schedule.cron == DEFAULT_CRON == "0 3 * * *"
    assert schedule.schedule.timezone == "UTC"
    assert nightly.parameters["root"] == "s3://bucket/ial"
    assert nightly.parameters["dask_address"] == "tcp://127.0.0.1:8786"
    assert nightly.parameters["config"].endswith("configs/retrain/nightly.yaml")
    assert nightly.entrypoint == "flows.retrain.retrain_flow"  # importable from any directory
    assert nightly.concurrency_limit == 1

    own = tmp_path / "nightly.yaml"
    own.write_text("dataset: audioset\n")
    (custom,) = build_deployments(only=["retrain"], cron="30 1 * * 1-5", timezone="Europe/Paris",
                                  retrain_config=str(own))
    assert custom.schedules[0].schedule.cron == "30 1 * * 1-5"
    assert custom.schedules[0].schedule.timezone == "Europe/Paris"
    assert custom.parameters == {"config": str(own)}


def test_a_bad_nightly_config_or_timezone_is_said_when_served_not_at_night(tmp_path):
    from ial.errors import ConfigError

    with pytest.raises(ValueError, match="^unknown timezone 'Mars/Base' \\(an IANA name"):
        build_deployments(only=["retrain"], timezone="Mars/Base")
    with pytest.raises(ConfigError, match="nightly.yaml: not found"):
        build_deployments(only=["retrain"], retrain_config=str(tmp_path / "nightly.yaml"))
    (tmp_path / "nightly.yaml").write_text("train_config: configs/train/no_such.yaml\n")
    from ial.cli import main

    result = CliRunner().invoke(main, ["serve", "--retrain-config",
                                       str(tmp_path / "nightly.yaml")])
    assert result.exit_code == 1 and result.output.strip() == (
        "Error: config field 'train_config': configs/train/no_such.yaml: not found "
        f"(in {tmp_path / 'nightly.yaml'})")


def test_all_deployments_build_with_their_parameters():
    deployments = {f"{d.flow_name}/{d.name}": d for d in build_deployments(root="/data/ial")}
    assert list(deployments) == EXPECTED
    vgg = deployments["ingest/vggsound"]
    assert vgg.parameters["manifest_format"] == "vggsound" and vgg.parameters["root"] == "/data/ial"
    assert vgg.parameters["config"].endswith("configs/ingest/vggsound.yaml")
    assert deployments["ingest/music"].parameters["manifest_format"] == "music"
    assert "root" not in deployments["evaluate/default"].parameters  # evaluate takes no root
    for name, d in deployments.items():
        assert bool(d.schedules) is (name == "retrain/nightly"), name
        # the parameters a deployment fixes are parameters of its flow
        assert set(d.parameters) <= set(d._parameter_openapi_schema.properties), name


def test_serve_cli_lists_and_rejects_unknown_names():
    from ial.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["serve", "--list"])
    assert result.exit_code == 0 and result.output.split() == EXPECTED
    result = runner.invoke(main, ["serve", "--only", "train/nightly"])
    assert result.exit_code == 2 and "unknown deployment 'train/nightly'" in result.output
    assert "--cron" in runner.invoke(main, ["serve", "--help"]).output
