"""Immutable versions with content manifests, persistent ids and their tombstones.

The manifest is computed from a real table file with ``medfed.node.manifest`` (what the
node agent sends), and checked against the independent RFC 9162 reference in
``tests/rfc9162.py``: anyone holding the node's file can recompute the root and compare.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cataloguetools import in_state, move, register
from hubtools import World, grant_access
from medfed.ledger.entries import canonical
from medfed.node.manifest import file_manifest_root, manifest_leaves
from medfed.node.stores.tables import TableStore
from rfc9162 import mth


def _table(tmp_path: Path, name: str, ages: list[int]) -> Path:
    path = tmp_path / name
    frame = pd.DataFrame(
        {"age": ages, "grade": ["a", None, "c", "d"][: len(ages)], "size": [1.5] * len(ages)}
    )
    frame.to_csv(path, index=False)
    return path


def _columns(path: Path) -> list[dict[str, str]]:
    return [c.model_dump(mode="json") for c in TableStore.open(path).columns]


def test_manifest_root_is_rfc9162_over_schema_and_rows(tmp_path: Path) -> None:
    path = _table(tmp_path, "t.csv", [50, 61, 72, 44])
    store = TableStore.open(path)
    leaves = list(manifest_leaves(store))
    assert leaves[0] == canonical({"columns": _columns(path)})
    assert leaves[1:] == [
        canonical([50, "a", 1.5]),
        canonical([61, None, 1.5]),
        canonical([72, "c", 1.5]),
        canonical([44, "d", 1.5]),
    ]
    assert file_manifest_root(path) == mth(leaves).hex()
    changed = _table(tmp_path, "u.csv", [50, 61, 72, 45])  # one value differs
    assert file_manifest_root(changed) != file_manifest_root(path)
    reordered = _table(tmp_path, "v.csv", [61, 50, 72, 44])
    assert file_manifest_root(reordered) != file_manifest_root(path)


def test_a_changed_manifest_makes_a_new_linked_version_and_the_old_stays(
    world: World, tmp_path: Path
) -> None:
    first = _table(tmp_path, "v1.csv", [50, 61, 72, 44])
    root1 = file_manifest_root(first)
    v1 = register(world, world.node_b, "study", columns=_columns(first), manifest_root=root1)
    # while a draft, the node's re-registration updates it in place
    again = register(world, world.node_b, "study", columns=_columns(first), manifest_root=root1)
    assert again["id"] == v1["id"] and again["version"] == 1
    assert move(world, world.admin.headers, v1["id"], "release").status_code == 200
    entries = world.count("ledger_entries")
    same = register(world, world.node_b, "study", columns=_columns(first), manifest_root=root1)
    assert same["id"] == v1["id"] and world.count("ledger_entries") == entries  # a no-op

    second = _table(tmp_path, "v2.csv", [50, 61, 72, 45])
    root2 = file_manifest_root(second)
    v2 = register(world, world.node_b, "study", columns=_columns(second), manifest_root=root2)
    assert v2["id"] != v1["id"]
    assert (v2["version"], v2["state"], v2["previous_id"]) == (2, "draft", v1["id"])
    old = world.api.get(f"/api/catalogue/{v1['id']}", headers=world.admin.headers).json()
    assert old["next_id"] == v2["id"] and old["state"] == "released"
    # anyone can check that version 1 has not changed: recompute from the node's file
    assert old["manifest_root"] == file_manifest_root(first) == root1
    assert old["manifest_root"] != file_manifest_root(second)
    assert world.count("ledger_entries") == entries + 1  # dataset.version

    versions = world.api.get(f"/api/datasets/{v2['id']}/versions", headers=world.admin.headers)
    assert [(v["version"], v["id"]) for v in versions.json()] == [(1, v1["id"]), (2, v2["id"])]


def test_names_resolve_to_the_newest_usable_version(world: World) -> None:
    v1 = world.node_a.dataset_id  # "cohort" at node-a, released and entitled
    v2 = register(world, world.node_a, "cohort", row_count=200)["id"]
    assert world.create_task(datasets=["node-a/cohort"])["dataset_ids"] == [v1]  # v2 is a draft
    assert move(world, world.admin.headers, v2, "release").status_code == 200
    grant_access(world.api, world.admin.headers, world.researcher, world.project_id, [v2])
    task = world.create_task(datasets=["cohort"])
    assert task["dataset_ids"] == [v2, world.node_b.dataset_id]
    assert world.create_task(datasets=[v1])["dataset_ids"] == [v1]  # an id is one exact version


def test_pids_resolve_and_invalidated_versions_keep_a_tombstone(world: World) -> None:
    dataset_id = in_state(world, "published")
    pid = f"mfd.{dataset_id}"
    record = world.api.get(f"/api/catalogue/{dataset_id}").json()
    assert record["pid"] == pid
    as_json = world.api.get(f"/pid/{pid}", headers={"Accept": "application/json"})
    assert as_json.status_code == 200
    assert as_json.json()["dataset_id"] == dataset_id and as_json.json()["tombstone"] is False
    redirect = world.api.get(f"/pid/{pid}", follow_redirects=False)
    assert redirect.status_code == 303
    assert redirect.headers["location"].endswith(f"/datasets/{dataset_id}")

    response = move(world, world.admin.headers, dataset_id, "invalidate", "consent withdrawn")
    assert response.status_code == 200
    tomb = world.api.get(f"/pid/{pid}", params={"format": "json"}).json()
    assert tomb["tombstone"] is True and tomb["state"] == "invalidated"
    assert tomb["label"] == "INVALIDATED: consent withdrawn"
    page = world.api.get(f"/pid/{pid}", follow_redirects=False)
    assert page.status_code == 200 and "INVALIDATED: consent withdrawn" in page.text
    # a draft has no pid; an unknown pid is 404
    draft = in_state(world, "draft", name="unreleased")
    assert world.api.get(f"/pid/mfd.{draft}", params={"format": "json"}).status_code == 404
    assert world.api.get("/pid/10.1234/nothing", params={"format": "json"}).status_code == 404
