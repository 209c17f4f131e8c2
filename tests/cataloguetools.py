"""Helpers for the catalogue tests: datasets registered by a node and moved by the API.

Everything goes through the real HTTP API of the test's hub: a node registers a dataset
(a draft), the hub admin moves it to the state a test needs.
"""

from __future__ import annotations

from typing import Any

from hubtools import COLUMNS, NodeInfo, World, bearer

__all__ = ["PATHS", "in_state", "move", "register", "state_of"]

# the moves that lead from a fresh draft to each state
PATHS: dict[str, list[str]] = {
    "draft": [],
    "released": ["release"],
    "published": ["release", "publish"],
    "invalidated": ["release", "invalidate"],
}


def register(
    world: World,
    node: NodeInfo,
    name: str,
    *,
    columns: list[dict[str, str]] | None = None,
    row_count: int | None = 100,
    manifest_root: str | None = None,
    summary: dict[str, Any] | None = None,
    description: str = "",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "description": description,
        "columns": columns or COLUMNS,
        "row_count": row_count,
        "summary": summary,
        "manifest_root": manifest_root,
    }
    response = world.api.post("/api/node/datasets", json=body, headers=node.headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def move(
    world: World, headers: dict[str, str], dataset_id: int, transition: str, reason: str = ""
) -> Any:
    body = {"reason": reason or f"{transition} for a test"}
    return world.api.post(f"/api/datasets/{dataset_id}/{transition}", json=body, headers=headers)


def in_state(world: World, state: str, name: str = "study", node: NodeInfo | None = None) -> int:
    """A new dataset on ``node`` (node-b by default) moved by the hub admin to ``state``."""
    dataset_id = int(register(world, node or world.node_b, name)["id"])
    for transition in PATHS[state]:
        response = move(world, world.admin.headers, dataset_id, transition)
        assert response.status_code == 200, response.text
    return dataset_id


def state_of(world: World, dataset_id: int) -> dict[str, Any]:
    response = world.api.get(f"/api/catalogue/{dataset_id}", headers=bearer(world.admin.token))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data
