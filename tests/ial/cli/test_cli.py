import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ial.cli import SUBCOMMANDS, main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))


def test_top_level_help_lists_every_stage():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in ("demo", "ingest", "featurize", "train", "evaluate", "separate", "info", "serve"):
        assert name in result.output


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommand_explains_itself(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and len(result.output.splitlines()) > 8


_CONFIG_OF = {"demo": "ial.demo.pipeline:DemoConfig",
              "ingest": "preprocessing.ingest.config:IngestConfig",
              "featurize": "preprocessing.featurize.config:FeaturizeConfig",
              "train": "ial.training.config:TrainConfig", "evaluate": "ial.evaluate:EvalConfig"}


@pytest.mark.parametrize("name", sorted(_CONFIG_OF))
def test_the_set_example_in_each_help_is_a_field_of_that_stage(name):
    import importlib
    import re

    from ial.config import load_config

    help_text = " ".join(CliRunner().invoke(main, [name, "--help"]).output.split())
    example = re.search(r"e\.g\. --set (\S+?)\.? Repeatable", help_text).group(1)
    module, cls = _CONFIG_OF[name].split(":")
    required = ("checkpoint=a/model.pt", "data=a/shards/d") if name == "evaluate" else ()
    cfg = load_config(getattr(importlib.import_module(module), cls), None, (*required, example))
    key, value = example.split("=")
    field = cfg
    for part in key.split("."):
        field = getattr(field, part)
    assert str(field) == value, (example, field)


def test_print_config_shows_the_resolved_config_and_runs_nothing(tmp_path):
    import yaml

    root = tmp_path / "root"
    result = CliRunner().invoke(main, [
        "train", "--config", os.path.join(REPO, "configs", "train", "realistic.yaml"),
        "--root", str(root),
        "--set", "model.embed_dim=64", "--set", "method.critic_input_size=[32,32]",
        "--print-config"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["model"]["embed_dim"] == 64 and shown["model"]["n_classes"] == 8  # file + --set
    assert shown["method"]["critic_input_size"] == [32, 32] and shown["root"] == str(root)
    assert not root.exists()  # nothing ran

    result = CliRunner().invoke(main, [
        "ingest", "--manifest", "https://me:s3cret@example.com/m.csv", "--proxy",
        "http://user:hunter2@proxy:3128", "--root", str(root), "--print-config"])
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output and "hunter2" not in result.output
    assert yaml.safe_load(result.output)["ytdlp_options"]["proxy"] == "http://***@proxy:3128"


def test_bad_config_value_names_the_field():
    result = CliRunner().invoke(main, ["demo", "--set", "videos_per_class=many"])
    assert result.exit_code != 0
    assert "config field 'videos_per_class'" in result.output


def test_python_dash_m_ial_evaluate_help():
    out = subprocess.run([sys.executable, "-m", "ial.evaluate", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "--checkpoint" in out.stdout


_ANALYTICS = ("import ial.cli; from prefect.settings import get_current_settings; "
              "print(get_current_settings().server.analytics_enabled)")


@pytest.mark.parametrize("exported, expected", [(None, "False"), ("true", "True")])
def test_prefect_telemetry_is_off_unless_the_user_turns_it_on(exported, expected, tmp_path):
    # `ial ...` run directly (not through make): offline, telemetry printed tracebacks.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_ANALYTICS_ENABLED"}
    env["PREFECT_HOME"] = str(tmp_path)
    if exported is not None:
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = exported
    out = subprocess.run([sys.executable, "-c", _ANALYTICS], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
