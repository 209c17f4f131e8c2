"""What a node tells the hub about each run for the audit: two keyed hashes and a category.

The node's own run log keeps the whole story (the rule, its reason, the row-set
fingerprints; ``medfed node queries``). With each outcome the node sends the hub only:

* ``filter_hash``: HMAC-SHA-256 of the task's filter (canonical JSON), keyed with the
  node's audit key — its first 32 hex digits are the log's ``filter_hmac``. Equal filters
  give equal hashes at one node; without the node secret nobody can test a guess.
* ``rowset_fingerprint``: HMAC-SHA-256 of the run's row-set fingerprints (in the order
  they were recorded), the same key; ``None`` when the run used no row set.
* ``rule``: the category of what decided (:data:`~medfed.common.resources.RuleCategory`),
  never counts, values or the reason text.

The hub keeps the hashes in its ledger entry of the run and the category for the data's
stewards only (researchers see contributing and withheld node counts, nothing more).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from medfed.common.resources import RULE_CATEGORIES
from medfed.node.runlog import canonical_json

__all__ = ["outcome_audit", "rule_category"]

#: the node log's rule names that are not categories themselves
_FAILURES = {"parameters", "error"}


def rule_category(audit: dict[str, Any]) -> str:
    """The category of the node log's ``rule`` (a grid is logged as ``threshold``)."""
    rule = audit.get("rule")
    if not rule:
        return "none"
    rule = str(rule)
    if rule == "threshold" and str(audit.get("withheld", "")).startswith("grid"):
        return "grid"
    if rule in RULE_CATEGORIES:
        return rule
    if "budget" in rule:
        return "budget"
    if rule in _FAILURES or not audit.get("withheld"):
        return "none"  # the run failed (its status says so): no rule decided
    return "local"  # another data-dependent rule of this node held the output back


def outcome_audit(key: bytes, where: Any, audit: dict[str, Any]) -> dict[str, str | None]:
    """The fields of :class:`~medfed.common.resources.RunOutcome` for the hub's audit."""
    prints = audit.get("rowsets") or []
    fingerprint = (
        hmac.new(key, "\n".join(str(p) for p in prints).encode(), hashlib.sha256).hexdigest()
        if prints
        else None
    )
    return {
        "filter_hash": hmac.new(key, canonical_json(where), hashlib.sha256).hexdigest(),
        "rowset_fingerprint": fingerprint,
        "rule": rule_category(audit),
    }
