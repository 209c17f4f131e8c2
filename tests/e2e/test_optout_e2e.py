"""A patient's opt-out through a real hub and two real node processes (issue 16).

Two hospitals hold GBSG2 (``north``: the first 340 rows, ``south``: the rest) as table
dataset ``gbsg2`` with a ``pid`` person column; discovery counts are not rounded
(``count_rounding = 1``) so one person shows. While the nodes run, the steward of
``north`` opts one patient out with the real CLI (``medfed node optout add``); with no
restart, the next count, discovery answer, GLM fit and export leave that patient out —
each equal to pandas/statsmodels on the pooled table minus the patient. ``optout remove``
brings the patient back in the next run. The hub's ledger shows the register's keyed hash
change (and change back); the researcher's catalogue, node list and task views never
carry the number excluded.

One row-set rule shapes the order (``medfed.node.gate.rowsets``): after the opt-out, a
release must not split the patient off the cell it lies in, so the filtered queries run
while the patient is out (the patient falls in the unused part with the rows the filter
leaves out), and the unfiltered count — withheld at ``north`` while the patient is out, as
it would tell the opt-out by difference — is released once the patient is back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from lifelines.datasets import load_gbsg2

from medfed.algorithms.glm.results import GLMResult
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e

WHERE = "age >= 50"
SPLIT = 340


def _frame() -> pd.DataFrame:
    frame: pd.DataFrame = load_gbsg2()
    frame.insert(0, "pid", [f"G{i:04d}" for i in range(len(frame))])
    return frame


FRAME = _frame()
#: the patient who opts out: a north patient inside the filter
PATIENT = str(FRAME.iloc[:SPLIT].loc[FRAME.age >= 50, "pid"].iloc[3])

STRATEGY = """
[columns]
pid = "keep"
age = "keep"
tsize = "keep"
cens = "keep"
horTh = "delete"
menostat = "delete"
tgrade = "delete"
pnodes = "delete"
progrec = "delete"
estrec = "delete"
time = "delete"

[k_anonymity]
quasi_identifiers = ["cens"]
k = 2
"""


def medfed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medfed.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=300,
    )


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root: Path = tmp_path_factory.mktemp("optout-federation")
    shares = {"north": {"gbsg2": FRAME.iloc[:SPLIT]}, "south": {"gbsg2": FRAME.iloc[SPLIT:]}}
    with Federation(
        root, shares, extra_policy="count_rounding = 1", person_columns={"gbsg2": "pid"}
    ) as federation:
        yield federation


def _optout(fed: Federation, action: str) -> None:
    done = medfed(
        "node", "optout", action, PATIENT, "--config", str(fed.nodes["north"].config_path)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "next run" in done.stdout


def _register_hashes(fed: Federation) -> list[str]:
    """The register hashes the hub's ledger holds from ``north``, oldest first."""
    north = next(n.id for n in fed.admin.nodes.list() if n.name == "north")
    hashes = []
    for entry in fed.admin.ledger.entries():
        body = json.loads(entry.body)
        if body.get("action") == "node.optout.register" and north in _values(body):
            hashes.append(str(body["hashes"]["optout.register"]))
    return hashes


def _values(body: dict[str, Any]) -> list[Any]:
    objects = body.get("objects") or {}
    return list(objects.values()) if isinstance(objects, dict) else list(objects)


def _researcher_view(fed: Federation) -> str:
    """What the researcher sees of the catalogue and the nodes (timestamps aside)."""
    datasets = [d.model_dump(mode="json") for d in fed.researcher.datasets.list()]
    nodes = [
        {
            k: v
            for k, v in n.model_dump(mode="json").items()
            if "seen" not in k and not k.endswith("_at")
        }
        for n in fed.researcher.nodes.list()
    ]
    return json.dumps({"datasets": datasets, "nodes": nodes}, sort_keys=True)


def _export(fed: Federation, tmp: Path, name: str) -> pd.DataFrame:
    """``medfed node export build`` at north (filtered), opened: the rows that left."""
    (tmp / "s.toml").write_text(STRATEGY)
    keys = tmp / "recipient"
    if not keys.with_suffix(".pub").exists():
        assert medfed("node", "export", "keygen", "--out", str(keys)).returncode == 0
        (tmp / "terms.txt").write_text("Approved study only.")
    config = str(fed.nodes["north"].config_path)
    package = tmp / f"{name}.tar"
    built = medfed("node", "export", "build", "gbsg2", "--strategy", str(tmp / "s.toml"),
                   "--recipient", f"{keys}.pub", "--terms", str(tmp / "terms.txt"),
                   "--out", str(package), "--config", config, "--where", WHERE,
                   "--format", "csv")  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    out = tmp / name
    opened = medfed("node", "export", "open", str(package), "--key", f"{keys}.key",
                    "--out", str(out))  # fmt: skip
    assert opened.returncode == 0, opened.stdout + opened.stderr
    return pd.read_csv(out / "data.csv", dtype={"pid": str})


def test_an_opt_out_reaches_every_output_before_the_next_run_and_back(
    fed: Federation, tmp_path: Path
) -> None:
    client = fed.researcher
    before_view = _researcher_view(fed)
    start_hashes = _register_hashes(fed)
    assert len(start_hashes) == 1  # reconciled once on start (empty register)

    _optout(fed, "add")  # the nodes keep running
    pooled = FRAME[FRAME.pid != PATIENT]
    subset = pooled[pooled.age >= 50]

    count = client.tasks.run("count", datasets=["gbsg2"], where=WHERE, progress=False)
    assert count.result.n == len(subset) == (FRAME.age >= 50).sum() - 1

    found = client.access.count([WHERE], wait=60)
    assert found.status == "completed" and found.count == len(subset)

    glm = client.tasks.run(
        "glm",
        datasets=["gbsg2"],
        progress=False,
        outcome="cens",
        covariates=["age", "tsize", "pnodes", "horTh"],
        family="binomial",
        where=WHERE,
    )
    assert isinstance(glm.result, GLMResult)
    ref = smf.glm(
        "cens ~ age + tsize + pnodes + C(horTh)", subset, family=sm.families.Binomial()
    ).fit()
    assert glm.result.n == ref.nobs == len(subset)
    for name in ref.params.index:
        ours = glm.result.coefficient(name.replace("C(", "").replace(")", ""))
        np.testing.assert_allclose(
            (ours.estimate, ours.std_error), (ref.params[name], ref.bse[name]), rtol=1e-6
        )

    exported = _export(fed, tmp_path, "out")
    north = FRAME.iloc[:SPLIT]
    expected = north[(north.age >= 50) & (north.pid != PATIENT)]
    assert PATIENT not in set(exported.pid)
    assert sorted(exported.pid) == sorted(expected.pid)

    # the whole table at north minus one patient would tell the opt-out: withheld, and
    # withheld like any gate rule — no error text, no count, the catalogue unchanged
    submitted = client.tasks.submit("count", datasets=["gbsg2"])
    whole = client.tasks.wait(submitted.id, timeout=120, progress=False)
    north_run = next(r for r in whole.runs if r.node_name == "north")
    assert north_run.status.value == "done" and north_run.error is None
    assert north_run.output_status is None  # researchers never see who withheld
    assert (whole.contributing_nodes, whole.withheld_nodes) == (1, 1)
    assert whole.status.value == "failed" and "at least 2" in (whole.error or "")
    hashes = _register_hashes(fed)
    assert len(hashes) == 2 and hashes[0] == start_hashes[0] and hashes[1] != hashes[0]
    shown = _researcher_view(fed)
    assert shown == before_view

    _optout(fed, "remove")  # the patient comes back before the next run
    back = client.tasks.run("count", datasets=["gbsg2"], progress=False)
    assert back.result.n == len(FRAME)
    exported = _export(fed, tmp_path, "back")
    assert PATIENT in set(exported.pid)
    assert len(exported) == ((north.age >= 50).sum())
    hashes = _register_hashes(fed)
    assert hashes[-1] == start_hashes[0] and len(hashes) == 3  # empty again: the same hash
    assert _researcher_view(fed) == before_view
