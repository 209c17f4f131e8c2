"""Red team: a curious researcher attacks the disclosure gate of a real federation.

Hub and three node processes on 127.0.0.1, GBSG2 split unevenly (161 / 216 / 309), the
default policy (k = 5). One test per attack class of issue 11; each asserts that the
attack yields neither an individual's value nor an exact count in 1..k-1, and that what
the researcher sees does not say which node held back or why.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from medfed.common.resources import TaskPublic
from medfed.testing.demo import split_gbsg2
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e

K = 5


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, gbsg2: pd.DataFrame) -> Iterator[Federation]:
    root: Path = tmp_path_factory.mktemp("redteam")
    shares = {name: {"gbsg2": share} for name, share in split_gbsg2(gbsg2).items()}
    with Federation(root, shares) as federation:
        yield federation


def run(fed: Federation, algorithm: str, **params: Any) -> TaskPublic:
    client = fed.researcher
    task = client.tasks.submit(algorithm, datasets=["gbsg2"], **params)
    return client.tasks.wait(task.id, progress=False)


def _no_node_named(task: TaskPublic) -> None:
    text = json.dumps(task.model_dump(mode="json"))
    for name in ("hospital-a", "hospital-b", "hospital-c"):
        assert name not in (task.error or "")
    assert all(r.output_status is None for r in task.runs)
    assert "min_rows" not in text and "differencing" not in text and "subset" not in text


def test_the_run_list_of_a_multi_round_task_does_not_say_which_node_withheld(
    fed: Federation, gbsg2: pd.DataFrame
) -> None:
    """Later GLM rounds go to contributors only; the researcher sees first-round runs only.

    First in the module, so the row-set memory holds only the whole dataset: at the
    hospital with 1 patient under 43 the filter falls under k, the other two iterate.
    """
    counts = [int((share["age"] < 43).sum()) for share in split_gbsg2(gbsg2).values()]
    assert sorted(counts)[0] in range(1, K) and sorted(counts)[1] >= 25  # the scenario
    task = run(
        fed, "glm", outcome="cens", covariates=["tsize"], family="binomial", where="age < 43"
    )
    assert task.status.value == "completed", task.error
    assert (task.contributing_nodes, task.withheld_nodes) == (2, 1)
    every_run = fed.admin.tasks.runs(task.id)  # the hub administrator's view
    rounds = {r.round for r in every_run}
    assert len(rounds) > 2  # the fit iterated, and the withheld node is missing from it:
    assert len({r.node_name for r in every_run if r.round == max(rounds)}) == 2
    seen = [(r.node_name, r.round, r.status.value, r.error) for r in task.runs]
    assert sorted(name for name, *_ in seen) == ["hospital-a", "hospital-b", "hospital-c"]
    assert {tuple(rest) for _, *rest in seen} == {(min(rounds), "done", None)}
    _no_node_named(task)
    with pytest.raises(Exception, match="hub administrator"):
        fed.researcher.tasks.runs(task.id)


def test_chosen_grid_every_day_never_marks_the_small_cells(fed: Federation) -> None:
    """A histogram with a bin per 50 days: cells of 1..4 are never visible, even marked."""
    bins = [float(b) for b in range(0, 2700, 50)]
    task = run(fed, "histogram", column="time", bins=bins)
    _no_node_named(task)
    if task.result is not None:  # only nodes whose whole grid passed contributed
        counts = np.asarray(task.result["counts"])
        assert "incomplete" not in task.result
        assert task.result["suppressed_nodes"] == task.withheld_nodes
        assert task.withheld_nodes >= 1  # 50-day bins hold 1..4 patients at every hospital
        assert counts.sum() >= 0
    else:
        assert task.withheld_nodes >= 2


def test_complement_differencing_of_a_count(fed: Federation, gbsg2: pd.DataFrame) -> None:
    """count(all) - count(NOT F) for a small F: the complement is withheld."""
    youngest = int(gbsg2["age"].min())
    total = run(fed, "count")
    assert total.result is not None and total.result["n"] == len(gbsg2)
    complement = run(fed, "count", where=f"age > {youngest}")
    small = int((gbsg2["age"] == youngest).sum())
    assert 0 < small < K
    if complement.result is not None:
        assert total.result["n"] - complement.result["n"] not in range(1, K)
    _no_node_named(complement)


def test_mean_over_two_sets_differing_by_one_patient(fed: Federation, gbsg2: pd.DataFrame) -> None:
    """mean(F) and mean(F minus one patient) never both come from the same rows."""
    first = run(fed, "mean", columns=["tsize"], where="pnodes >= 1")
    assert first.result is not None
    top = int(gbsg2["pnodes"].max())
    second = run(fed, "mean", columns=["tsize"], where=f"pnodes >= 1 and pnodes < {top}")
    _no_node_named(second)
    if second.result is not None:
        removed = first.result["columns"]["tsize"]["n"] - second.result["columns"]["tsize"]["n"]
        assert removed == 0 or removed >= K


def test_three_set_tracker(fed: Federation, gbsg2: pd.DataFrame) -> None:
    """Padding a small set with a large released one: A, A or T, then their difference."""
    run(fed, "count", where="menostat == 'Post'")
    oldest = int(gbsg2["age"].max())
    tracker = run(fed, "count", where=f"menostat == 'Post' or age >= {oldest}")
    _no_node_named(tracker)
    padded = run(fed, "count", where=f"menostat == 'Post' or age < {oldest}")
    for task in (tracker, padded):
        if task.result is not None:
            assert task.withheld_nodes >= 1 or task.result["n"] in (len(gbsg2),)


def test_two_colluding_projects(fed: Federation, gbsg2: pd.DataFrame) -> None:
    """Project 1 asks F, project 2 asks F minus a few: the node remembers across projects."""
    cutoff = 40
    first = run(fed, "count", where=f"age >= {cutoff}")
    assert first.result is not None
    client = fed.researcher
    mine = fed.project_id
    second_project = client.projects.create("second", "another study").id
    fed.project_id = second_project
    fed.grant_all_access()
    fed.project_id = mine
    client.project = second_project
    try:
        few = int(gbsg2.loc[gbsg2.age >= cutoff, "age"].sort_values().iloc[2])
        narrower = run(fed, "count", where=f"age >= {cutoff} and age != {few}")
    finally:
        client.project = mine
    _no_node_named(narrower)
    if narrower.result is not None:
        assert first.result["n"] - narrower.result["n"] not in range(1, K)


def test_single_node_reference_is_refused(fed: Federation) -> None:
    client = fed.researcher
    task = client.tasks.wait(
        client.tasks.submit("count", datasets=["hospital-c/gbsg2"]).id, progress=False
    )
    assert task.status.value == "failed" and task.result is None


def test_quantiles_at_many_probabilities_return_no_individual_value(
    fed: Federation, gbsg2: pd.DataFrame
) -> None:
    """99 probabilities over unique survival days: no value fewer than k patients share."""
    probs = [i / 100 for i in range(1, 100)]
    task = run(fed, "quantiles", column="time", probs=probs)
    assert task.result is not None
    times = gbsg2["time"]
    for q in task.result["quantiles"]:
        if q["value"] is not None:
            assert int((times == q["value"]).sum()) >= K
        else:  # a bin (or search interval) that holds at least k patients
            inside = (times >= q["lower"]) & (times <= q["upper"])
            assert int(inside.sum()) >= K


def test_km_releases_no_event_time_and_no_small_step(fed: Federation, gbsg2: pd.DataFrame) -> None:
    """The whole dataset's KM curve: steps on a public grid, each >= k events."""
    task = run(fed, "km", duration="time", event="cens")
    assert task.result is not None
    event_days = set(gbsg2.loc[gbsg2.cens == 1, "time"])
    for curve in task.result["curves"]:
        step = curve["time_step"]
        assert step is not None and all(e >= K for e in curve["events"])
        for t in curve["times"]:
            assert abs(t / step - round(t / step)) < 1e-9  # a grid point, not a patient's day
        assert not set(curve["times"]) >= event_days


def test_discovery_says_no_below_k(fed: Federation, gbsg2: pd.DataFrame) -> None:
    youngest = int(gbsg2["age"].min())
    answer = fed.researcher.access.count(
        [{"column": "age", "op": "==", "value": youngest}], granularity="boolean"
    )
    assert 0 < int((gbsg2["age"] == youngest).sum()) < K
    assert answer.exists is not True and answer.count is None


def test_memory_is_durable_and_never_sent_to_the_hub(fed: Federation) -> None:
    run(fed, "count", where="age >= 45")  # a split of the whole dataset at every node
    node = fed.nodes["hospital-a"]
    files = list((node.folder / "state" / "rowsets").glob("*.npy"))
    assert files, "the node keeps its row-set memory on its own disk"
    before = files[0].read_bytes()
    node.stop()
    node.start()
    assert files[0].read_bytes() == before  # a restart keeps it
    task = run(fed, "count", where="age >= 40")  # answered again after the restart
    assert task.result is not None
    hub_db = sqlite3.connect(fed.hub.data_dir / "hub.db")
    try:
        tables = [r[0] for r in hub_db.execute("SELECT name FROM sqlite_master")]
    finally:
        hub_db.close()
    assert not any("rowset" in t for t in tables)
    assert not list(fed.hub.data_dir.rglob("*.npy"))


def test_steward_sees_the_withheld_queries(fed: Federation) -> None:
    node = fed.nodes["hospital-a"]
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "medfed"),
            "node",
            "queries",
            "-c",
            str(node.config_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "count" in out and "!" in out  # a differencing or subset refusal, flagged
