"""Researcher scripts end to end: a hub and one hospital as processes, scripts in bwrap.

The hospital allows single-node results (``sole_release``) so that one node is enough.
Each test submits ``script.run`` through the SDK; the steward approves envelopes in the
node's one approval store (:class:`medfed.node.plans.PlanApprovals`), as the CLI does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from medfed.algorithms.scripts.script import ScriptParams, script_envelope
from medfed.common.resources import TaskPublic
from medfed.node.executors.scripts import FAILED
from medfed.node.plans import PlanApprovals
from medfed.node.runlog import RunLog
from medfed.testing.demo import load_gbsg2, split_gbsg2
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e

HOSPITAL = "hospital-a"
FAST = {"MEDFED_MIN_NODES": "1", "MEDFED_LEASE_SECONDS": "10"}

TABLES = """
import medfed_script as ms
df = ms.load_data()
ms.output("grades", "table", ms.crosstab(df, "tgrade", "horTh"))
ms.output("by_nodes", "table", ms.crosstab(df, "pnodes"))
ms.output("fit", "regression", ms.ols(df, "time", ["age"]))
"""

ESCAPE = """
import socket
import medfed_script as ms
df = ms.load_data()
config = open({config!r}).read()  # the node's own config: not in the sandbox
sock = socket.create_connection(("127.0.0.1", {port}), timeout=5)
sock.sendall(df.to_csv().encode())
ms.output("grades", "table", ms.crosstab(df, "tgrade"))
"""


@pytest.fixture(scope="module")
def share() -> pd.DataFrame:
    return split_gbsg2(load_gbsg2())[HOSPITAL]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, share: pd.DataFrame) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("scripts")
    with Federation(
        root,
        {HOSPITAL: {"gbsg2": share}},
        hub_env=FAST,
        heartbeat_seconds=0.5,
        extra_policy="sole_release = true",
    ) as federation:
        yield federation


def _state(fed: Federation) -> Path:
    return fed.nodes[HOSPITAL].folder / "state"


def _params(source: str, columns: list[str], outputs: dict[str, str]) -> dict[str, Any]:
    return {"source": source, "columns": columns, "outputs": outputs, "timeout_s": 120}


def _approve(fed: Federation, params: dict[str, Any]) -> str:
    envelope = script_envelope(ScriptParams.model_validate(params), "gbsg2")
    return PlanApprovals(_state(fed)).approve(envelope, params["source"], name="e2e")


def _run(fed: Federation, params: dict[str, Any]) -> TaskPublic:
    task = fed.researcher.tasks.submit("script.run", datasets=["gbsg2"], **params)
    return fed.researcher.tasks.wait(task.id, timeout=180)


def _log(fed: Federation, run_id: int) -> dict[str, Any]:
    """The node log's entry of the run (the agent writes it just after posting)."""
    deadline = time.monotonic() + 60
    while True:
        log = RunLog(_state(fed) / "runs.jsonl").entries()
        entries = [e for e in log if e.get("run_id") == run_id]
        if entries:
            return entries[-1]
        assert time.monotonic() < deadline, f"run {run_id} never reached the node log"
        time.sleep(0.1)


def test_an_unapproved_script_is_refused_before_it_runs_and_waits_for_the_steward(
    fed: Federation,
) -> None:
    params = _params(TABLES, ["tgrade", "horTh", "pnodes", "time", "age"], {"grades": "table"})
    task = _run(fed, params)
    (run,) = task.runs
    assert run.status == "refused"
    assert run.error is not None and "is not approved at this node" in run.error
    entry = _log(fed, run.run_id)
    assert entry["rule"] == "policy"
    assert "script_exit" not in entry and "sandbox" not in entry  # nothing was started
    pending = PlanApprovals(_state(fed)).pending()
    (request,) = [r for r in pending.values() if r["envelope"]["kind"] == "script.run"]
    assert request["task_id"] == task.id
    assert request["envelope"]["columns"] == sorted(params["columns"])


def test_a_table_with_a_small_cell_is_refused_while_the_others_leave(
    fed: Federation, share: pd.DataFrame
) -> None:
    outputs = {"grades": "table", "by_nodes": "table", "fit": "regression"}
    params = _params(TABLES, ["tgrade", "horTh", "pnodes", "time", "age"], outputs)
    _approve(fed, params)
    task = _run(fed, params)
    assert task.status == "completed", task.runs
    (node,) = fed.researcher.tasks.result(task).result.nodes
    small = node.outputs["by_nodes"]
    assert (small.status, small.rule, small.data) == ("refused", "threshold", None)
    grades = node.outputs["grades"]
    assert grades.status == "released"
    expected = share.groupby(["tgrade", "horTh"]).size()
    got = {tuple(c["key"]): c["count"] for c in grades.data["cells"]}
    assert got == {k: int(v) for k, v in expected.items()}
    fit = node.outputs["fit"]
    assert fit.status == "released" and fit.data["n"] == len(share)


def test_a_script_that_reads_the_node_config_and_opens_a_socket_fails_without_data(
    fed: Federation,
) -> None:
    config = str(fed.nodes[HOSPITAL].folder / "node.toml")
    source = ESCAPE.format(config=config, port=fed.hub.port)
    params = _params(source, ["tgrade"], {"grades": "table"})
    _approve(fed, params)
    task = _run(fed, params)
    (run,) = task.runs
    assert (run.status, run.error) == ("failed", FAILED)
    entry = _log(fed, run.run_id)
    assert entry["script_failure"] == "exit status" and entry["sandbox"] == "bwrap"
    assert "FileNotFoundError" in Path(entry["stderr"]).read_text()  # the node's own log
    source = ESCAPE.format(config="/dev/null", port=fed.hub.port)  # the socket alone
    params = _params(source, ["tgrade"], {"grades": "table"})
    _approve(fed, params)
    (run,) = _run(fed, params).runs
    assert (run.status, run.error) == ("failed", FAILED)
    stderr = Path(_log(fed, run.run_id)["stderr"]).read_text()
    assert "ConnectionRefusedError" in stderr or "OSError" in stderr
