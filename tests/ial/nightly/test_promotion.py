"""Champion/challenger promotion: decide(), the atomic champion pointer, the decision records."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from ial.storage import Storage
from ial.nightly.promotion import (decide, list_promotions, promote_if_better, read_champion,
                                    write_champion)


def test_decide_promotes_without_a_champion():
    d = decide(None, 3.0)
    assert d.promote and d.action == "promote" and d.champion_sdr is None


@pytest.mark.parametrize(
    "champion, challenger, margin, promote",
    [(5.0, 5.5, 0.0, True), (5.0, 5.0, 0.0, False), (5.0, 4.0, 0.0, False),
     (5.0, 5.4, 0.5, False), (5.0, 5.6, 0.5, True), (-2.0, -1.0, 0.0, True)],
)
def test_decide_needs_a_strict_improvement(champion, challenger, margin, promote):
    d = decide(champion, challenger, margin)
    assert d.promote is promote
    assert (d.champion_sdr, d.challenger_sdr, d.min_improvement) == (champion, challenger, margin)


def test_decide_never_promotes_a_nan_score():
    assert not decide(None, float("nan")).promote
    assert not decide(1.0, float("inf")).promote


@pytest.mark.parametrize(
    "gain_ci, margin, promote",
    [((0.5, 0.1, 0.9), 0.0, True),     # the whole interval above 0
     ((0.5, -0.1, 1.1), 0.0, False),   # a mean gain the test sources cannot tell from 0
     ((0.8, 0.4, 1.2), 0.5, False),    # the lower end below the margin
     (None, 0.0, False)],              # no interval: kept, not promoted on the mean alone
)
def test_decide_with_require_ci_judges_the_interval_not_the_mean(gain_ci, margin, promote):
    d = decide(5.0, 5.0 + (gain_ci[0] if gain_ci else 1.0), margin, gain_ci, require_ci=True)
    assert d.promote is promote and d.gain_ci == gain_ci
    assert ("interval" in d.reason) and (promote or "below" in d.reason or "gone" in d.reason)


def test_decide_without_require_ci_keeps_the_interval_for_the_record_only():
    d = decide(5.0, 5.5, 0.0, (0.5, -0.1, 1.1))
    assert d.promote and d.gain_ci == (0.5, -0.1, 1.1) and "beats champion" in d.reason


def test_decide_rejects_a_negative_margin():
    with pytest.raises(ValueError, match="min_improvement"):
        decide(1.0, 2.0, -0.1)


def test_promote_if_better_records_both_scores_and_moves_the_pointer(tmp_path):
    root = Storage(tmp_path)
    t0 = dt.datetime(2026, 1, 1, 3, 0, tzinfo=dt.timezone.utc)
    d1, r1 = promote_if_better(root, "ck/a/model.pt", 4.0, now=t0, details={"run": "a"})
    assert d1.promote
    assert read_champion(root)["checkpoint"] == "ck/a/model.pt"
    assert read_champion(root)["sdr"] == 4.0 and read_champion(root)["run"] == "a"

    d2, r2 = promote_if_better(root, "ck/b/model.pt", 3.5, now=t0 + dt.timedelta(days=1))
    assert not d2.promote and r2["decision"] == "keep"
    assert (r2["champion_sdr"], r2["challenger_sdr"]) == (4.0, 3.5)
    assert read_champion(root)["checkpoint"] == "ck/a/model.pt"

    d3, r3 = promote_if_better(root, "ck/c/model.pt", 4.2, champion_sdr=4.1,
                               now=t0 + dt.timedelta(days=2))
    assert d3.promote and r3["champion"] == "ck/a/model.pt" and r3["champion_sdr"] == 4.1
    champion = read_champion(root)
    assert champion["checkpoint"] == "ck/c/model.pt" and champion["previous"] == "ck/a/model.pt"
    assert r3["gain_ci"] is None and r3["require_ci"] is False

    records = list_promotions(root)
    assert [r["decision"] for r in records] == ["promote", "keep", "promote"]
    assert [r["challenger"] for r in records] == ["ck/a/model.pt", "ck/b/model.pt", "ck/c/model.pt"]
    # every record is a complete JSON file; no temporary file is left visible
    assert sorted(os.listdir(tmp_path / "promotions")) == sorted(
        os.path.basename(r["record_url"]) for r in records)
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []

    # require_ci: a gain whose interval reaches 0 does not replace the champion
    d4, r4 = promote_if_better(root, "ck/d/model.pt", 4.5, gain_ci=(0.3, -0.2, 0.8),
                               require_ci=True, now=t0 + dt.timedelta(days=3))
    assert not d4.promote and r4["gain_ci"] == [0.3, -0.2, 0.8] and r4["require_ci"] is True
    saved = json.loads(open(r4["record_url"]).read())
    assert saved["gain_ci"] == [0.3, -0.2, 0.8] and saved["decision"] == "keep"


def test_champion_pointer_is_replaced_whole_on_s3(s3_root):
    assert read_champion(s3_root) is None
    decision, record = promote_if_better(s3_root, f"{s3_root}/checkpoints/a/model.pt", 1.5)
    assert decision.promote and record["record_url"].startswith("s3://")
    assert read_champion(s3_root)["checkpoint"].endswith("a/model.pt")
    assert list_promotions(s3_root)[0]["challenger_sdr"] == 1.5


def test_read_champion_names_a_broken_file(tmp_path):
    (tmp_path / "champion.json").write_text("{not json")
    with pytest.raises(ValueError, match="champion.json"):
        read_champion(tmp_path)
    write_champion(tmp_path, {"checkpoint": "x/model.pt", "sdr": 1.0})
    assert json.loads((tmp_path / "champion.json").read_text())["checkpoint"] == "x/model.pt"
    with pytest.raises(ValueError, match="checkpoint"):
        write_champion(tmp_path, {"sdr": 1.0})


def test_tree_fingerprint_changes_with_the_files_only(tmp_path):
    from ial.nightly.promotion import tree_fingerprint

    assert tree_fingerprint(str(tmp_path / "missing")) is None
    (tmp_path / "shards").mkdir()
    assert tree_fingerprint(str(tmp_path / "shards")) is None
    (tmp_path / "shards" / "shard-00000.parquet").write_bytes(b"x" * 10)
    first = tree_fingerprint(str(tmp_path / "shards"))
    (tmp_path / "shards" / ".shard-00001.parquet.tmp-1234").write_bytes(b"partial")
    assert tree_fingerprint(str(tmp_path / "shards")) == first
    (tmp_path / "shards" / "_stats").mkdir()
    (tmp_path / "shards" / "_stats" / "shard-00001.json").write_text("{}")
    assert tree_fingerprint(str(tmp_path / "shards")) not in (None, first)
    assert tree_fingerprint(str(tmp_path / "shards"), suffix=".parquet") == first


def test_scoring_fingerprint_changes_with_the_data_or_the_protocol():
    """A stored champion score is reused only for the same held-out files and protocol: a new
    evaluation rule (e.g. the window the model is applied with) makes the nightly re-score it."""
    from ial.nightly.promotion import scoring_fingerprint

    protocol = {"split": "test", "mix": 2, "seed": 1234, "window_samples": 65535}
    first = scoring_fingerprint("abc", protocol)
    assert scoring_fingerprint("abc", dict(protocol)) == first
    assert scoring_fingerprint("abd", protocol) != first
    assert scoring_fingerprint("abc", {**protocol, "window_samples": 16383}) != first
