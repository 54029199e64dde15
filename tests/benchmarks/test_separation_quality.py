"""benchmarks/separation_quality.py: the whole path on a tiny corpus (its statistics are
``ial.evaluate.compare``'s, tested in tests/ial/evaluate/test_compare.py)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ial.demo.realistic_corpus import missing_tools
from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "separation_quality.py"
_spec = importlib.util.spec_from_file_location("separation_quality", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.slow
@pytest.mark.skipif(bool(missing_tools()), reason="needs " + ", ".join(missing_tools()))
def test_quick_run_goes_through_every_stage_and_ends_with_the_result_lines(quick_work):
    """From the tiny corpus's shards (``quick_prepared`` built them from nothing with this script):
    the step throughput, three trainings, their evaluations, the table and the RESULT lines."""
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--work", str(quick_work)],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert re.search(r"^data: \d+ manifest rows \(\d+ missing videos\) → ingest", run.stdout,
                     re.M)
    assert re.search(r"^training step of the ial recipe .* before \(NCHW\) \d+\.\d clips/s, "
                     r"after \(channels_last\) \d+\.\d clips/s", run.stdout, re.M)
    for row in ("ial", "cms", "sop", "oracle_irm", "oracle_ibm", "mixture"):
        assert re.search(rf"^{row}\s+-?\d+\.\d\d", run.stdout, re.M), row
    names = [re.match(r"RESULT (\w+)=(-?[\d.]+) target", x).group(1) for x in lines[-3:]]
    assert names == ["ial_sdr", "ial_minus_sop_sdr", "ial_minus_cms_sdr"]
    assert "95 % paired bootstrap CI" in run.stdout
    assert re.search(r"^ial minus cms, interference and artifacts: SIR [+-]\d+\.\d\d \[.+\], "
                     r"SAR [+-]\d+\.\d\d \[.+\] dB \(95 % paired bootstrap CIs\)$",
                     run.stdout, re.M)
    fraction = r"[+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]"
    assert re.search(rf"^ial minus cms, masks: own {fraction}, other {fraction}, shared "
                     rf"{fraction} \(fractions; 95 % paired bootstrap CIs\)$", run.stdout, re.M)
    # the mask measures of every row: the mixture keeps everything of every bin
    assert re.search(r"^mixture .* 1\.000  1\.000  2\.000$", run.stdout, re.M)

    # shards of another featurize config under the same --work (an earlier recipe's): one line
    stats = sorted((quick_work / "root" / "shards" / "realistic" / "_stats").glob("*.json"))[0]
    stats.write_text(json.dumps({**json.loads(stats.read_text()), "config_hash": "0ld"}))
    again = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--prepare-only", "--work",
                            str(quick_work)], capture_output=True, text=True, timeout=600,
                           cwd=REPO)
    assert again.returncode == 1
    assert again.stderr.strip().startswith("Error: ") and "\n" not in again.stderr.strip()
    assert "featurize config hash 0ld" in again.stderr


def model_rows(stdout: str) -> list[list[str]]:
    """The table rows of the trained models (ial, cms, sop; one table per seed), less the
    clips/s column (a speed, not a result)."""
    return [x.split()[:7] + x.split()[8:] for x in stdout.splitlines()
            if re.match(r"(ial|cms|sop)\s+-?\d", x)]


def summary_lines(stdout: str) -> list[str]:
    """The lines over the seeds and the RESULT lines."""
    return [x for x in stdout.splitlines()
            if x.startswith(("RESULT ", "over seeds")) or "two-level" in x]


@pytest.mark.slow
@pytest.mark.skipif(bool(missing_tools()), reason="needs " + ", ".join(missing_tools()))
def test_a_step_budget_trains_the_same_models_again(quick_work):
    """Two seeds with ``--steps``; then seed 1's ``ial`` (critic and adversary: the most
    randomness) trained again from scratch gives the same rows, and the other five trainings and
    their evaluations are reused as they were."""

    def run() -> str:
        proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--steps", "6", "--work",
                               str(quick_work), "--seed", "0", "1"], capture_output=True,
                              text=True, timeout=600, cwd=REPO)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        for seed in (0, 1):
            assert f"(6 steps of training each, seed {seed};" in proc.stdout
        assert [r[6] for r in model_rows(proc.stdout)] == ["6"] * 6  # steps
        return proc.stdout

    first = run()
    checkpoints = quick_work / "root" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        f"{m}-s{s}-6steps" for m in ("cms", "ial", "sop") for s in (0, 1)]
    shutil.rmtree(checkpoints / "ial-s1-6steps")  # trained again from scratch
    again = run()
    assert model_rows(again) == model_rows(first)
    assert summary_lines(again) == summary_lines(first)
    for kind in ("finished training of exactly this config",
                 "evaluation of exactly this checkpoint"):
        reused = re.findall(rf"^(\S+): reusing its {kind}", again, re.M)
        assert reused == ["ial-s0-6steps", "cms-s0-6steps", "sop-s0-6steps", "cms-s1-6steps",
                          "sop-s1-6steps"], kind
    assert "reusing" not in first

    # the two seeds' means: the intervals resample the trainings, then the sources
    rows, summary = model_rows(first), summary_lines(first)
    assert summary[0].startswith("over seeds 0, 1 (2 trainings of each model")
    assert [x.split(":")[0] for x in summary[1:5]] == [
        "ial minus sop", "ial minus cms", "ial minus cms, interference and artifacts",
        "ial minus cms, masks"]
    assert re.fullmatch(r"ial minus cms, interference and artifacts: SIR [+-]\d+\.\d\d \[.+\], "
                        r"SAR [+-]\d+\.\d\d \[.+\] dB \(95 % two-level bootstrap CIs\)",
                        summary[3])
    assert summary[4].endswith("(fractions; 95 % two-level bootstrap CIs)")
    mean_of_rows = np.mean([float(rows[0][1]), float(rows[3][1])])  # the rows are rounded
    assert summary[5].startswith("RESULT ial_sdr=") and summary[5].endswith(" target>=6")
    assert abs(float(summary[5].split("=")[1].split()[0]) - mean_of_rows) <= 0.0051


def test_a_work_folder_that_is_a_file_is_one_error_line(tmp_path):
    work = tmp_path / "not-a-folder"
    work.write_text("x")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--work", str(work)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"Error: --work {work} is not a directory"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--steps", "-3", "--work",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "Error: --steps -3: must be >= 1 (or 0: the --minutes budget)"


def test_bad_values_are_refused_before_anything_is_installed(tmp_path, monkeypatch):
    import ial.demo.realistic_corpus as corpus

    installs = []
    monkeypatch.setattr(corpus, "install_tools", lambda: installs.append(1))
    for argv, line in [(["--steps", "-3"], "--steps -3: must be >= 1 (or 0: the --minutes budget)"),
                       (["--minutes", "0"], "--minutes 0: must be > 0 (or give --steps N)"),
                       (["--seed", "1", "0", "1"], "--seed 1 0 1: a seed is given twice")]:
        with pytest.raises(SystemExit) as exc:
            bench.main([*argv, "--setup", "--work", str(tmp_path)])
        assert str(exc.value) == f"Error: {line}"
    assert installs == []
