"""Champion/challenger promotion: a new checkpoint replaces the champion only if it scores better.

The nightly retraining (``flows/retrain.py``, its plain parts in ``ial.nightly``) trains a
challenger, evaluates it on a fixed held-out set and asks this module whether to promote it.
Everything lives under the storage root::

    champion.json                       the pointer to the promoted checkpoint (atomic replace)
    promotions/<UTC timestamp>.json     one record per decision: both scores + the decision

``champion.json`` holds at least ``checkpoint`` (the model.pt URL) and ``sdr`` (its mean SDR in
dB on the held-out set named by ``eval_data``). It is only ever replaced whole (``atomic_write``:
a local rename or a single S3 PUT), so a reader sees the old champion or the new one, never half.

Plain functions, no Prefect: callable from tests, notebooks and the ``retrain`` flow alike.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from typing import Any

from ial.storage import Storage, atomic_write, filesystem, listdir, read_text

CHAMPION_FILE = "champion.json"
PROMOTIONS_DIR = "promotions"


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of comparing a challenger with the champion (scores in dB of mean SDR)."""

    promote: bool
    reason: str
    champion_sdr: float | None
    challenger_sdr: float
    min_improvement: float
    # challenger - champion on the same mixtures: (mean, 95 % low, 95 % high) of the paired
    # difference (``ial.evaluate.compare``), when both reports were at hand
    gain_ci: tuple[float, float, float] | None = None

    @property
    def action(self) -> str:
        return "promote" if self.promote else "keep"


def decide(champion_sdr: float | None, challenger_sdr: float, min_improvement: float = 0.0,
           gain_ci: tuple[float, float, float] | None = None, require_ci: bool = False
           ) -> Decision:
    """Promote iff there is no champion yet, or the challenger beats it by more than
    ``min_improvement`` dB: its mean SDR gain, or with ``require_ci`` the lower end of the paired
    95 % interval of the gain (``gain_ci``: challenger − champion source by source on the same
    mixtures), so that a gain the test sources cannot tell from noise does not replace a known
    model. Without ``gain_ci`` a ``require_ci`` challenger is kept.

    A challenger whose score is not a finite number is never promoted. Ties are kept (the
    champion stays): a new checkpoint has to be strictly better to replace a known one.
    """
    if min_improvement < 0:
        raise ValueError(f"min_improvement must be >= 0 dB, got {min_improvement}")
    challenger_sdr = float(challenger_sdr)

    def result(promote: bool, reason: str) -> Decision:
        return Decision(promote, reason, champion_sdr, challenger_sdr, min_improvement, gain_ci)

    if challenger_sdr != challenger_sdr or challenger_sdr in (float("inf"), float("-inf")):
        return result(False, f"challenger SDR is not a finite number ({challenger_sdr})")
    if champion_sdr is None:
        return result(True, "no champion yet")
    if require_ci:
        if gain_ci is None:
            return result(False, "no paired interval of the gain (the champion's report is "
                                 "gone), and require_ci asks for one")
        low = gain_ci[1]
        if low > min_improvement:
            return result(True, f"the gain's 95 % interval [{low:.3f}, {gain_ci[2]:.3f}] dB "
                                f"is above {min_improvement:g} dB")
        return result(False, f"the gain's 95 % interval [{low:.3f}, {gain_ci[2]:.3f}] dB "
                             f"reaches {min_improvement:g} dB or below")
    gain = challenger_sdr - float(champion_sdr)
    if gain > min_improvement:
        return result(True,
                      f"challenger beats champion by {gain:.3f} dB (> {min_improvement:g} dB)")
    return result(False, f"challenger gains {gain:.3f} dB, needs > {min_improvement:g} dB")


def read_champion(root: Storage | str) -> dict | None:
    """The champion pointer (``champion.json`` under ``root``), or None when there is none yet."""
    root = root if isinstance(root, Storage) else Storage(root)
    url = root.url(CHAMPION_FILE)
    if not root.exists(CHAMPION_FILE):
        return None
    try:
        data = json.loads(read_text(url))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{url}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "checkpoint" not in data:
        raise ValueError(f"{url}: expected a mapping with a 'checkpoint' key")
    return data


def write_champion(root: Storage | str, champion: dict) -> str:
    """Replace the champion pointer atomically; returns its URL."""
    root = root if isinstance(root, Storage) else Storage(root)
    if "checkpoint" not in champion:
        raise ValueError("a champion record needs a 'checkpoint' (the model.pt URL)")
    url = root.url(CHAMPION_FILE)
    with atomic_write(url, "w") as f:
        json.dump(champion, f, indent=2, sort_keys=True)
    return url


def list_promotions(root: Storage | str) -> list[dict]:
    """Every recorded decision under ``<root>/promotions/``, oldest first."""
    root = root if isinstance(root, Storage) else Storage(root)
    records = []
    for url in listdir(root.url(PROMOTIONS_DIR)):
        if url.endswith(".json") and not url.rsplit("/", 1)[-1].startswith("."):
            records.append(json.loads(read_text(url)))
    return sorted(records, key=lambda r: r.get("decided_at", ""))


def tree_fingerprint(url: str, suffix: str = "") -> str | None:
    """A short hash of the files under ``url`` ending in ``suffix`` (relative paths + sizes).

    None when there are no such files.

    Two calls give the same value iff the same files of the same sizes are there: the nightly
    uses it to tell "new shards since last time" and "the held-out set changed". Hidden names
    (temporary files of writers in progress) are ignored.
    """
    fs, path = filesystem(url)
    if not fs.exists(path):
        return None
    entries = []
    for name, info in sorted(fs.find(path, detail=True).items()):
        rel = name[len(path.rstrip("/")):].lstrip("/")
        if not rel.endswith(suffix) or any(part.startswith(".") for part in rel.split("/")):
            continue
        entries.append(f"{rel}\t{info.get('size')}")
    if not entries:
        return None
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


def scoring_fingerprint(data_fingerprint: str | None, protocol: dict) -> str:
    """A short hash of what a score was measured on: the held-out files (``tree_fingerprint``)
    and the evaluation protocol (``ial.evaluate``'s ``results["protocol"]``: split, mixtures,
    seed, window, ...). A champion's stored SDR is compared with a challenger's only when the two
    are equal; otherwise the nightly scores the champion again."""
    blob = json.dumps({"data": data_fingerprint, "protocol": protocol}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _timestamp(now: dt.datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%S.%fZ")


def promote_if_better(
    root: Storage | str,
    challenger: str,
    challenger_sdr: float,
    min_improvement: float = 0.0,
    champion_sdr: float | None = None,
    details: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
    gain_ci: tuple[float, float, float] | None = None,
    require_ci: bool = False,
) -> tuple[Decision, dict]:
    """Compare ``challenger`` (a model.pt URL) with the current champion and record the decision.

    ``champion_sdr`` is the champion's score on the same held-out set; when None, the score stored
    in ``champion.json`` is used (the caller passes a fresh one when the held-out set changed).
    ``details`` (eval data, run names, data fingerprint, ...) is stored in both the decision record
    and, when promoted, the new champion pointer. Returns ``(decision, record)``; the record is
    written to ``<root>/promotions/<timestamp>.json`` (and its URL is ``record["record_url"]``).
    ``gain_ci`` and ``require_ci``: see ``decide``; the interval is recorded when given.
    """
    root = root if isinstance(root, Storage) else Storage(root)
    now = now or dt.datetime.now(dt.timezone.utc)
    current = read_champion(root)
    if current is not None and champion_sdr is None:
        champion_sdr = current.get("sdr")
    if current is None:
        champion_sdr = None
    decision = decide(champion_sdr, challenger_sdr, min_improvement, gain_ci, require_ci)
    details = dict(details or {})
    record = {
        "decided_at": now.isoformat(),
        "decision": decision.action,
        "reason": decision.reason,
        "champion": current.get("checkpoint") if current else None,
        "champion_sdr": decision.champion_sdr,
        "challenger": challenger,
        "challenger_sdr": decision.challenger_sdr,
        "min_improvement": min_improvement,
        "gain_ci": list(gain_ci) if gain_ci else None,
        "require_ci": require_ci,
        **details,
    }
    if decision.promote:
        write_champion(root, {
            "checkpoint": challenger,
            "sdr": decision.challenger_sdr,
            "promoted_at": now.isoformat(),
            "previous": current.get("checkpoint") if current else None,
            **details,
        })
    record_url = root.url(PROMOTIONS_DIR, f"{_timestamp(now)}.json")
    record["record_url"] = record_url
    with atomic_write(record_url, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    return decision, record
