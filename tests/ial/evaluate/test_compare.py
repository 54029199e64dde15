"""ial.evaluate.compare / ``ial compare``: paired intervals, real reports, clear errors."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ial.errors import UserError
from ial.evaluate.compare import (
    across_seeds_ci, compare_reports, format_comparison, paired_ci, per_source)
from tests.ial.evaluate.test_pipeline import class_clips, export_tiny, write_shards


def test_paired_ci_is_deterministic_and_brackets_the_mean():
    rng = np.random.default_rng(0)
    a = {(i, 0): float(v) for i, v in enumerate(rng.normal(3.0, 1.0, 200))}
    b = {k: v - 0.5 + float(rng.normal(0, 0.2)) for k, v in a.items()}
    mean, lo, hi = paired_ci(a, b, seed=1)
    assert (mean, lo, hi) == paired_ci(a, b, seed=1)
    assert lo < mean < hi and 0.4 < mean < 0.6 and hi - lo < 0.2
    only_shared = dict(list(b.items())[:50])  # pairs only the sources both scored
    assert paired_ci(a, only_shared)[0] == pytest.approx(
        np.mean([a[k] - only_shared[k] for k in only_shared]))


def test_across_seeds_ci_covers_the_spread_between_trainings():
    rng = np.random.default_rng(0)
    keys = [(i, 0) for i in range(200)]
    b = {k: float(rng.normal(3.0, 1.0)) for k in keys}
    # two trainings of "a", each a steady 0.2 or 1.0 dB above b: every paired CI is narrow
    a = [{k: v + shift + float(rng.normal(0, 0.1)) for k, v in b.items()} for shift in (0.2, 1.0)]
    mean, lo, hi = across_seeds_ci(a, [b, b], seed=1)
    assert (mean, lo, hi) == across_seeds_ci(a, [b, b], seed=1)
    assert mean == pytest.approx(np.mean([paired_ci(x, b)[0] for x in a]))
    assert lo < 0.25 and hi > 0.95  # the interval spans both trainings ...
    for x in a:
        single = paired_ci(x, b)
        assert single[2] - single[1] < 0.1  # ... where each one's paired CI does not
    one = across_seeds_ci(a[:1], [b], seed=1)  # one training: sources only
    assert one[0] == pytest.approx(paired_ci(a[0], b)[0]) and one[2] - one[1] < 0.1


def test_per_source_reads_the_report_rows():
    report = {"mixtures": [{"index": 0, "scores": {"model": {"sdr": [1.0, 2.0],
                                                             "sir": [5.0, 6.0]}}},
                           {"index": 1, "scores": {}}]}  # a skipped (silent) mixture
    assert per_source(report, "model") == {(0, 0): 1.0, (0, 1): 2.0}
    assert per_source(report, "model", "sir") == {(0, 0): 5.0, (0, 1): 6.0}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """A real evaluation report of a tiny untrained model, and the same with n=1 (another
    protocol). Returns (report dir, n=1 report dir)."""
    from ial.evaluate import EvalConfig, evaluate

    root = str(tmp_path_factory.mktemp("compareroot"))
    data = write_shards(root, "toy", class_clips())
    ckpt = export_tiny(os.path.join(root, "checkpoints", "tiny", "model.pt"))
    out = {}
    for n in (2, 1):
        cfg = EvalConfig(checkpoint=ckpt, data=data, mix=2, n_per_combination=n, num_examples=0,
                         out=os.path.join(root, "reports", f"n{n}"))
        out[n] = evaluate(cfg, progress=False)["report_dir"]
    return out[2], out[1]


def shifted_copy(report_dir: str, dest, shift: float) -> str:
    """A copy of a report whose model SDR is ``shift`` dB higher on every source."""
    saved = json.loads(open(os.path.join(report_dir, "results.json")).read())
    other = copy.deepcopy(saved)
    for m in other["mixtures"]:
        if m["scores"]:
            m["scores"]["model"]["sdr"] = [v + shift for v in m["scores"]["model"]["sdr"]]
    os.makedirs(dest, exist_ok=True)
    (dest / "results.json").write_text(json.dumps(other))
    return str(dest)


def test_a_real_report_against_itself_and_against_a_shifted_copy(reports, tmp_path):
    report, _ = reports
    same = compare_reports([(report, report)])
    assert same.overall == (0.0, 0.0, 0.0) and same.sources == 12
    assert same.mean_a == same.mean_b
    assert set(same.per_class) == {"bass", "flute", "violin"}  # the silent class is skipped

    better = shifted_copy(report, tmp_path / "better", 1.5)
    c = compare_reports([(better, report)])
    assert c.overall == pytest.approx((1.5, 1.5, 1.5))
    assert all(v == pytest.approx((1.5, 1.5, 1.5)) for v in c.per_class.values())
    text = format_comparison(c, "new", "old")
    assert "new - old: +1.50 dB, 95 % paired bootstrap CI [+1.50, +1.50]" in text
    assert "bass" in text
    two = compare_reports([(better, report), (report, report)])  # two trainings: +1.5 and 0
    assert two.overall[0] == pytest.approx(0.75) and two.trainings == 2
    assert two.overall[1] == pytest.approx(0.0) and two.overall[2] == pytest.approx(1.5)


def test_reports_of_other_mixtures_are_refused_by_name(reports, tmp_path):
    report, n1 = reports
    with pytest.raises(UserError, match="protocol 'n_per_combination' is 2 against 1"):
        compare_reports([(report, n1)])
    with pytest.raises(UserError, match="no scores of row 'nope'"):
        compare_reports([(report, report)], row="nope")
    older = json.loads(open(os.path.join(report, "results.json")).read())
    for row in older["rows"].values():
        del row["mask_own"]
    (tmp_path / "older").mkdir()
    (tmp_path / "older" / "results.json").write_text(json.dumps(older))
    with pytest.raises(UserError, match="no 'mask_own' in row 'model' .* re-run `ial evaluate`"):
        compare_reports([(str(tmp_path / "older"), report)], metric="mask_own")


def test_a_mask_measure_is_compared_as_a_fraction(reports, tmp_path):
    report, _ = reports
    c = compare_reports([(report, report)], metric="mask_shared", row="oracle_irm")
    assert c.overall == (0.0, 0.0, 0.0) and 0.7 < c.mean_a < 1.3
    assert "MASK_SHARED of row 'oracle_irm'" in format_comparison(c)
    assert "+0.000, 95 % paired bootstrap CI [+0.000, +0.000]" in format_comparison(c)


def test_cli_prints_the_difference_and_draws_it(reports, tmp_path):
    report, _ = reports
    better = shifted_copy(report, tmp_path / "better", 2.0)
    png = tmp_path / "diff.png"
    out = subprocess.run([sys.executable, "-c", "from ial.cli import main; main()", "compare",
                          better, report, "--names", "new", "old", "--plot", str(png)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "new - old: +2.00 dB" in out.stdout and png.stat().st_size > 0
    out = subprocess.run([sys.executable, "-c", "from ial.cli import main; main()", "compare",
                          better, report, "--plot", str(png / "x.png")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr  # said first:
    assert out.stderr.strip() == f"Error: --plot's directory {png}: is a file, not a directory"


def test_cli_names_the_models_by_their_report_folders_unless_told(reports, tmp_path):
    from click.testing import CliRunner

    from ial.cli import main

    report, _ = reports
    better = shifted_copy(report, tmp_path / "ial-s3", 1.0)
    out = CliRunner().invoke(main, ["compare", better + "/", report])
    assert out.exit_code == 0, out.output
    assert f"ial-s3 - {os.path.basename(report)}: +1.00 dB" in out.output
    out = CliRunner().invoke(main, ["compare", better, report, "--also", better, report])
    assert "A - B: +1.00 dB" in out.output  # several trainings: not the first one's names


@pytest.mark.parametrize("make_bad, expected", [
    (lambda d: d, "no results.json"),
    (lambda d: (d / "results.json").write_text("{not json"), "not valid JSON (line 1"),
    (lambda d: (d / "results.json").write_text("{}"), "has no per-mixture scores"),
])
def test_a_bad_report_is_one_error_line(reports, tmp_path, make_bad, expected):
    report, _ = reports
    bad = tmp_path / "bad"
    bad.mkdir()
    make_bad(bad)
    out = subprocess.run([sys.executable, "-c", "from ial.cli import main; main()", "compare",
                          report, str(bad)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]  # one line, no traceback
    assert out.stderr.startswith("Error: ") and expected in out.stderr
