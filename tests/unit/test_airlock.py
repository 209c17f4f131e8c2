"""The node's airlock store, what leaves after a decision, and the steward's CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medfed.cli.main import app
from medfed.common.errors import BadRequest, Conflict, NotFound
from medfed.node.airlock import Airlock
from medfed.node.executors.scripts import leaving

OUTPUTS: dict[str, dict[str, Any]] = {
    "grades": {"kind": "table", "verdict": "pass", "rule": None, "data": {"cells": []}},
    "small": {"kind": "table", "verdict": "fail", "rule": "threshold", "data": None},
    "note": {"kind": "value", "verdict": "review", "rule": "unclassifiable", "data": {"x": 1}},
}


def _hold(airlock: Airlock, run_id: int = 7) -> int:
    item = airlock.hold(
        run_id=run_id,
        task_id=3,
        project_id=1,
        dataset="gbsg2",
        script="ab" * 32,
        lease_id="lease-1",
        outputs=OUTPUTS,
    )
    return item.id


def test_a_held_run_survives_a_restart_and_keeps_its_lease(tmp_path: Path) -> None:
    item_id = _hold(Airlock(tmp_path))
    again = Airlock(tmp_path)  # a restarted agent opens the same file
    assert _hold(again) == item_id  # the same run held again is the same item
    assert again.held_runs() == [7]
    again.set_lease(7, "lease-2")
    item = again.get(item_id)
    assert (item.status, item.lease_id, item.held_names) == ("held", "lease-2", ["note"])
    assert again.undelivered() == []


def test_release_is_decided_once_and_delivered_once(tmp_path: Path) -> None:
    airlock = Airlock(tmp_path)
    item_id = _hold(airlock)
    released = airlock.decide(item_id, "released")
    assert released.status == "released" and released.decided_at is not None
    with pytest.raises(Conflict):
        airlock.decide(item_id, "refused", reason="changed my mind")
    assert [i.id for i in airlock.undelivered()] == [item_id]
    assert airlock.held_runs() == [7]  # the lease is kept until the outcome is posted
    airlock.mark_delivered(item_id)
    assert airlock.undelivered() == [] and airlock.held_runs() == []


def test_refusing_needs_a_reason_and_bad_decisions_change_nothing(tmp_path: Path) -> None:
    airlock = Airlock(tmp_path)
    item_id = _hold(airlock)
    with pytest.raises(BadRequest, match="reason"):
        airlock.decide(item_id, "refused", reason="  ")
    with pytest.raises(BadRequest, match="released or refused"):
        airlock.decide(item_id, "maybe")  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        airlock.decide(item_id + 1, "released")
    assert airlock.get(item_id).status == "held"
    refused = airlock.decide(item_id, "refused", reason="free text could name a patient")
    assert (refused.status, refused.reason) == ("refused", "free text could name a patient")


def test_what_leaves_follows_the_rules_and_the_stewards_decision(tmp_path: Path) -> None:
    airlock = Airlock(tmp_path)
    first, second = _hold(airlock, 1), _hold(airlock, 2)
    released = leaving(OUTPUTS, airlock.decide(first, "released"))["outputs"]
    assert released["note"] == {
        "kind": "value",
        "by": "steward",
        "status": "released",
        "rule": None,
        "data": {"x": 1},
    }
    assert released["small"] == {
        "kind": "table",
        "by": "rules",
        "status": "refused",
        "rule": "threshold",
        "data": None,
    }
    assert released["grades"]["data"] == {"cells": []}
    refused = leaving(OUTPUTS, airlock.decide(second, "refused", reason="no"))["outputs"]
    assert (refused["note"]["status"], refused["note"]["rule"], refused["note"]["data"]) == (
        "refused",
        "steward",
        None,
    )
    assert refused["grades"]["status"] == "released"


def test_the_stewards_cli_lists_shows_and_decides(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('hub_url = "http://127.0.0.1:9"\nsecret = "mfn_x"\ndata_dir = "state"\n')
    item_id = _hold(Airlock(tmp_path / "state"))
    runner = CliRunner()
    listed = runner.invoke(app, ["node", "airlock", "list", "-c", str(config)])
    assert listed.exit_code == 0 and "note" in listed.output
    shown = runner.invoke(app, ["node", "airlock", "show", str(item_id), "-c", str(config)])
    assert shown.exit_code == 0 and '"x": 1' in shown.output
    bad = runner.invoke(
        app, ["node", "airlock", "refuse", str(item_id), "-c", str(config), "--reason", ""]
    )
    assert bad.exit_code != 0 and Airlock(tmp_path / "state").get(item_id).status == "held"
    ok = runner.invoke(app, ["node", "airlock", "release", str(item_id), "-c", str(config)])
    assert ok.exit_code == 0
    assert Airlock(tmp_path / "state").get(item_id).status == "released"
    empty = runner.invoke(app, ["node", "airlock", "list", "-c", str(config)])
    assert "the airlock is empty" in empty.output
