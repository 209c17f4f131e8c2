"""Beacon-style count discovery: answered by the nodes, never exact under the threshold,
and limited by a per-user budget whose refusal spends nothing."""

from __future__ import annotations

from typing import Any

import pytest

from hubtools import SQLITE_ONLY, NodeInfo, World, done

pytestmark = SQLITE_ONLY

COUNT = "/api/discovery/count"
OLD = [{"column": "age", "op": ">=", "value": 50}]


def _release(world: World) -> None:
    for node in (world.node_a, world.node_b):
        path = f"/api/datasets/{node.dataset_id}"
        if world.api.get(path, headers=world.admin.headers).json().get("state") == "draft":
            response = world.api.post(f"{path}/release", headers=world.admin.headers)
            assert response.status_code == 200, response.text


def _query(world: World, granularity: str = "count", filters: Any = OLD) -> Any:
    body = {"filters": filters, "granularity": granularity}
    return world.api.post(COUNT, json=body, headers=world.outsider.headers)


def _answer(world: World, node: NodeInfo, n: int | None) -> None:
    assignment = world.claim(node)
    assert assignment is not None
    assert assignment["discovery"] is True and assignment["entitlement"] is None
    assert assignment["algorithm"] == "count"
    if n is None:
        body = {"lease_id": assignment["lease_id"], "status": "done", "output_status": "suppressed"}
    else:
        body = done(assignment, {"n": n})
    assert world.post_outcome(node, assignment["run_id"], body).status_code == 200


def _result(world: World, query_id: int) -> dict[str, Any]:
    response = world.api.get(f"/api/discovery/queries/{query_id}", headers=world.outsider.headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def test_counts_under_the_threshold_are_never_exact(world: World) -> None:
    _release(world)
    started = _query(world)
    assert started.status_code == 201, started.text
    assert started.json()["status"] == "running"
    query_id = started.json()["id"]
    _answer(world, world.node_a, 40)  # rounded by node A
    _answer(world, world.node_b, None)  # 0 < n < k: suppressed by node B's gate
    result = _result(world, query_id)
    assert result["status"] == "completed"
    by_node = {d["node_name"]: d for d in result["datasets"]}
    assert by_node["node-a"]["count"] == 40 and by_node["node-a"]["exists"] is True
    assert by_node["node-b"]["count"] is None and by_node["node-b"]["count_text"].startswith("<")
    assert result["count"] == 40
    assert "under the threshold at 1 dataset" in result["count_text"]
    # a zero is not shown exactly either at count granularity
    second = _query(world).json()["id"]
    _answer(world, world.node_a, 0)
    _answer(world, world.node_b, 0)
    zero = _result(world, second)
    assert zero["count"] is None and zero["count_text"] == "<threshold"
    assert all(d["count"] is None and d["count_text"].startswith("<") for d in zero["datasets"])


def test_boolean_granularity_says_yes_only_for_at_least_k_rows(world: World) -> None:
    _release(world)
    query_id = _query(world, "boolean").json()["id"]
    _answer(world, world.node_a, 0)
    _answer(world, world.node_b, None)  # 1..k-1 rows: withheld, and that reads as "no"
    result = _result(world, query_id)
    assert result["granularity"] == "boolean" and result["exists"] is False
    assert result["count"] is None and result["count_text"] == "no"
    assert all(d["count"] is None for d in result["datasets"])
    assert [d["exists"] for d in result["datasets"]] == [False, False]
    second = _query(world, "boolean").json()["id"]
    _answer(world, world.node_a, 10)  # k rows or more (rounded by the node)
    _answer(world, world.node_b, None)
    result = _result(world, second)
    assert result["exists"] is True and result["count_text"] == "yes"
    assert [d["exists"] for d in result["datasets"]] == [True, False]


@pytest.mark.hub(discovery_budget=2)
def test_an_exhausted_budget_is_refused_clearly_and_spends_nothing(world: World) -> None:
    _release(world)
    bad = _query(world, filters=[{"column": "weight", "op": ">", "value": 1}])
    assert bad.status_code == 422 and "no released or published dataset" in bad.json()["detail"]
    first, second = _query(world), _query(world)
    assert first.status_code == 201 and second.status_code == 201
    assert second.json()["budget_left"] == 0
    queries, tasks = world.count("discovery_queries"), world.count("tasks")
    refused = _query(world)
    assert refused.status_code == 429
    detail = refused.json()["detail"]
    assert "budget exhausted" in detail and "next query is possible at" in detail
    assert (world.count("discovery_queries"), world.count("tasks")) == (queries, tasks)
    # other users keep their own budget
    own = world.api.post(COUNT, json={"filters": OLD}, headers=world.researcher.headers)
    assert own.status_code == 201


def test_another_users_query_is_not_found(world: World) -> None:
    _release(world)
    query_id = _query(world).json()["id"]
    response = world.api.get(f"/api/discovery/queries/{query_id}", headers=world.researcher.headers)
    assert response.status_code == 404
