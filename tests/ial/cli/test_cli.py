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
