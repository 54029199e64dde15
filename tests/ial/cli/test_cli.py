import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ial.cli import SUBCOMMANDS, main


def test_top_level_help_lists_every_stage():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in ("demo", "ingest", "featurize", "train", "evaluate", "separate", "serve"):
        assert name in result.output


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommand_explains_itself(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and len(result.output.splitlines()) > 8


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
