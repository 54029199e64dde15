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
def test_quick_run_goes_through_every_stage_and_ends_with_the_result_lines(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--work", str(tmp_path)],
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
    stats = sorted((tmp_path / "root" / "shards" / "realistic" / "_stats").glob("*.json"))[0]
    stats.write_text(json.dumps({**json.loads(stats.read_text()), "config_hash": "0ld"}))
    again = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--prepare-only", "--work",
                            str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert again.returncode == 1
    assert again.stderr.strip().startswith("Error: ") and "\n" not in again.stderr.strip()
    assert "featurize config hash 0ld" in again.stderr


@pytest.mark.slow
@pytest.mark.skipif(bool(missing_tools()), reason="needs " + ", ".join(missing_tools()))
def test_a_step_budget_trains_the_same_models_again(tmp_path):
    command = [sys.executable, str(SCRIPT), "--quick", "--steps", "6", "--work", str(tmp_path)]

    outputs = []

    def run(*seeds: str) -> list[str]:
        proc = subprocess.run(command + ["--seed", *(seeds or ["0"])], capture_output=True,
                              text=True, timeout=600, cwd=REPO)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        outputs.append(proc.stdout)
        assert "(6 steps of training each, seed 0;" in proc.stdout
        # the table's model rows (less the clips/s column, a speed) and the RESULT lines
        rows = [x.split()[:7] + x.split()[8:] for x in proc.stdout.splitlines()
                if re.match(r"(ial|cms|sop)\s+-?\d", x)]
        assert [r[6] for r in rows] == ["6", "6", "6"] * max(1, len(seeds))  # steps
        return rows + [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")
                       or x.startswith("over seeds") or "two-level" in x]

    first = run()
    checkpoints = tmp_path / "root" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "cms-s0-6steps", "ial-s0-6steps", "sop-s0-6steps"]
    shutil.rmtree(checkpoints)  # train all three again from scratch
    assert run() == first

    # two seeds: seed 0 reused as it was, seed 1 trained; the RESULT lines are the means
    both = run("0", "1")
    assert both[:3] == first[:3]
    reused = re.findall(r"^(\S+): reusing its evaluation of exactly this checkpoint", outputs[-1],
                        re.M)
    assert reused == ["ial-s0-6steps", "cms-s0-6steps", "sop-s0-6steps"]  # not seed 1's
    assert sorted(p.name for p in checkpoints.iterdir() if "-s1-" in p.name) == [
        "cms-s1-6steps", "ial-s1-6steps", "sop-s1-6steps"]
    assert both[6].startswith("over seeds 0, 1 (2 trainings of each model")
    assert [x.split(":")[0] for x in both[7:11]] == [
        "ial minus sop", "ial minus cms", "ial minus cms, interference and artifacts",
        "ial minus cms, masks"]
    assert re.fullmatch(r"ial minus cms, interference and artifacts: SIR [+-]\d+\.\d\d \[.+\], "
                        r"SAR [+-]\d+\.\d\d \[.+\] dB \(95 % two-level bootstrap CIs\)", both[9])
    assert both[10].endswith("(fractions; 95 % two-level bootstrap CIs)")
    mean_of_rows = np.mean([float(both[0][1]), float(both[3][1])])  # the rows are rounded
    assert both[11].startswith("RESULT ial_sdr=") and both[11].endswith(" target>=6")
    assert abs(float(both[11].split("=")[1].split()[0]) - mean_of_rows) <= 0.0051


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
