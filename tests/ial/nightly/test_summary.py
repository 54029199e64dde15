"""A night's scores and summary: overall SDR, the last trained data, the markdown table."""

from __future__ import annotations

import datetime as dt

import pytest

from ial.nightly.promotion import promote_if_better
from ial.nightly.summary import (count_note, format_gain, last_trained_fingerprint, overall_sdr,
                                 render_summary)


def test_overall_sdr_and_last_fingerprint_and_summary(tmp_path):
    assert overall_sdr({"sdr": 3}) == 3.0
    with pytest.raises(KeyError, match="sdr"):
        overall_sdr({"SDR": "x"})
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert last_trained_fingerprint(tmp_path, "a") is None
    promote_if_better(tmp_path, "m1", 1.0, now=t0,
                      details={"dataset": "a", "train_fingerprint": "f1"})
    promote_if_better(tmp_path, "m2", 0.5, now=t0 + dt.timedelta(days=1),
                      details={"dataset": "b", "train_fingerprint": "g1"})
    promote_if_better(tmp_path, "m3", 0.5, now=t0 + dt.timedelta(days=2),
                      details={"dataset": "a", "train_fingerprint": "f2"})
    assert last_trained_fingerprint(tmp_path, "a") == "f2"
    assert last_trained_fingerprint(tmp_path, "b") == "g1"
    text = render_summary({"dataset": "a", "decision": "keep", "challenger_sdr": 1.5,
                           "champion_sdr": 2.0, "reason": "x | y", "skipped": [],
                           "gain_ci": (-0.5, -0.9, -0.1)})
    assert "| gain, 95 % paired CI (dB) | -0.50 [-0.90, -0.10] |" in text
    assert "| challenger SDR (dB) | 1.500 |" in text and "| champion SDR (dB) | 2.000 |" in text
    assert "x \\| y" in text  # a pipe in a value does not break the table


def test_notes_and_gain_format():
    assert count_note({"new": 3, "ok": 40, "junk": [1]}, ("new", "ok", "junk", "failed")) \
        == "new=3, ok=40"
    assert count_note(None, ("new",)) == "done" and count_note({}, ("new",)) == "done"
    assert format_gain((0.314, 0.02, 0.6)) == "+0.31 [+0.02, +0.60]"
    assert format_gain(None) is None
