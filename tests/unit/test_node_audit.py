"""What a node sends the hub for the audit: keyed hashes and a rule category, no reason."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from medfed.common.resources import RULE_CATEGORIES, RunOutcome
from medfed.node.audit import outcome_audit, rule_category
from medfed.node.runlog import canonical_json

KEY = b"k" * 32
WHERE = {"column": "age", "op": ">=", "value": 50}


@pytest.mark.parametrize(
    ("audit", "category"),
    [
        ({}, "none"),
        ({"rule": "threshold", "withheld": "min_rows: n under min_cell_count"}, "threshold"),
        ({"rule": "threshold", "withheld": "grid: a cell of counts under k"}, "grid"),
        ({"rule": "subset", "withheld": "…"}, "subset"),
        ({"rule": "differencing", "withheld": "…"}, "differencing"),
        ({"rule": "dominance", "withheld": "…"}, "dominance"),
        ({"rule": "local", "withheld": "min_rows"}, "local"),
        ({"rule": "policy"}, "policy"),
        ({"rule": "dp_budget", "withheld": "ε spent"}, "budget"),
        ({"rule": "parameters"}, "none"),
        ({"rule": "error", "withheld": "ValueError"}, "none"),
        ({"rule": "something_new", "withheld": "…"}, "local"),
    ],
)
def test_the_category_of_each_rule(audit: dict[str, str], category: str) -> None:
    assert rule_category(audit) == category
    assert category in RULE_CATEGORIES


def test_the_hashes_are_keyed_and_match_the_node_logs_prefix() -> None:
    audit = {"filter_hmac": "x", "rowsets": ["ab" * 16, "cd" * 16], "rule": "differencing"}
    sent = outcome_audit(KEY, WHERE, audit | {"withheld": "the reason stays at the node"})
    logged = hmac.new(KEY, canonical_json(WHERE), hashlib.sha256).hexdigest()[:32]
    assert sent["filter_hash"] is not None and sent["filter_hash"][:32] == logged
    assert sent["rowset_fingerprint"] is not None and len(sent["rowset_fingerprint"]) == 64
    assert outcome_audit(b"other" * 8, WHERE, audit)["filter_hash"] != sent["filter_hash"]
    assert outcome_audit(KEY, WHERE, {})["rowset_fingerprint"] is None
    assert sent["rule"] == "differencing"
    # the fields validate as a RunOutcome, and nothing else (the reason) is in them
    outcome = RunOutcome.model_validate({"lease_id": "l", "status": "done", **sent})
    assert "reason" not in outcome.model_dump_json()
