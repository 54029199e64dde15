"""benchmarks/adversary_unsupervised.py: the unsupervised IAL vs CMS path on a tiny corpus."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from benchmarks.adversary_unsupervised import runs
from ial.demo.realistic_corpus import missing_tools
from ial.training.config import load_train_config, method_config, model_config
from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "adversary_unsupervised.py"


@pytest.mark.slow
@pytest.mark.skipif(bool(missing_tools()), reason="needs " + ", ".join(missing_tools()))
def test_quick_run_trains_both_models_on_solo_pair_duets_and_ends_with_the_result_lines(
        quick_work):
    """On the tiny corpus separation_quality.py prepared (``quick_prepared``): its --work."""
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--work", str(quick_work)],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for row in ("ial_unsup", "cms_unsup", "oracle_irm", "oracle_ibm", "mixture"):
        assert re.search(rf"^{row}\s+-?\d+\.\d\d", run.stdout, re.M), row
    for run_name in ("ial_unsup-s3-6steps", "cms_unsup-s3-6steps"):
        saved = (quick_work / "root" / "checkpoints" / run_name / "config.yaml").read_text()
        assert "mode: unsupervised" in saved and "duets: solo_pairs" in saved
    assert "lambda_ind: 0.0\n" in (quick_work / "root" / "checkpoints" / "cms_unsup-s3-6steps"
                                   / "config.yaml").read_text()
    assert "95 % paired bootstrap CI" in run.stdout
    last = run.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"RESULT unsupervised_ial_minus_cms_sdr=-?[\d.]+ target>=0.5", last)


@pytest.mark.parametrize("class_loss", [False, True])
def test_the_two_trainings_differ_only_in_lambda_ind_and_keep_the_class_loss_if_asked(
        class_loss):
    (ial, ial_over), (cms, cms_over) = runs(class_loss).items()
    assert (ial, cms) == (("ial_unsup_cls", "cms_unsup_cls") if class_loss else
                          ("ial_unsup", "cms_unsup"))
    cfgs = [load_train_config(str(REPO / "configs/train/realistic.yaml"), over)
            for over in (ial_over, cms_over)]
    methods = [method_config(c) for c in cfgs]
    assert [m.lambda_ind for m in methods] == [0.01, 0.0]
    for cfg, method in zip(cfgs, methods):
        assert (method.mode, method.duets) == ("unsupervised", "solo_pairs")
        assert (method.lambda_cls, model_config(cfg).n_classes) == ((1.0, 8) if class_loss
                                                                    else (0.0, 0))


def test_bad_values_are_one_error_line(tmp_path):
    work = tmp_path / "not-a-folder"
    work.write_text("x")
    for argv, line in [(["--work", str(work)], f"--work {work} is not a directory"),
                       (["--steps", "0", "--work", str(tmp_path)], "--steps 0: must be >= 1")]:
        proc = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 1 and proc.stderr.strip() == f"Error: {line}", proc.stderr
