"""Zenodo deposition of metadata (never data) against a local Zenodo over real HTTP.

``medfed.testing.zenodo_server.ZenodoServer`` implements the deposit endpoints the hub
uses; the hub (the real app under TestClient) talks to it with httpx. A failure half-way
(publish answers 500) leaves nothing half-published: the dataset keeps its state and pid,
the draft deposition is deleted at Zenodo and the failure is recorded at the hub.

The hub talks only to Zenodo URLs on its allow-list (``zenodo_urls``): the ``zenodo``
fixture adds the local stand-in's URL to the app's settings, as an operator would add a
Zenodo of their own. The token is stored sealed, never in plain text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from cataloguetools import in_state, move, state_of
from hubtools import SQLITE_ONLY, World
from medfed.hub.db.models_catalogue import CatalogueSettings
from medfed.hub.keys import unseal
from medfed.testing.zenodo_server import ZenodoServer

pytestmark = SQLITE_ONLY

TOKEN = "org-b-zenodo-token"


@pytest.fixture
def zenodo(world: World) -> Iterator[ZenodoServer]:
    with ZenodoServer(token=TOKEN) as server:
        settings = world.app.state.settings
        settings.zenodo_urls = [*settings.zenodo_urls, server.url]
        yield server


def _configure(world: World, zenodo: ZenodoServer, token: str = TOKEN) -> Any:
    return world.api.put(
        f"/api/organizations/{world.org_b}/zenodo",
        json={"url": zenodo.url, "token": token},
        headers=world.org_admin.headers,
    )


def _depositions(world: World, dataset_id: int) -> list[dict[str, Any]]:
    response = world.api.get(f"/api/datasets/{dataset_id}/zenodo", headers=world.admin.headers)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()
    return data


def test_token_is_per_organization_and_never_returned(world: World, zenodo: ZenodoServer) -> None:
    response = _configure(world, zenodo)
    assert response.status_code == 200, response.text
    assert response.json() == {"organization_id": world.org_b, "url": zenodo.url, "token_set": True}
    read = world.api.get(f"/api/organizations/{world.org_b}/zenodo", headers=world.admin.headers)
    assert TOKEN not in read.text and read.json()["token_set"] is True
    other = world.api.put(
        f"/api/organizations/{world.org_b}/zenodo",
        json={"url": zenodo.url, "token": "x"},
        headers=world.researcher.headers,
    )
    assert other.status_code == 403
    entries = world.api.get("/api/ledger/entries", headers=world.admin.headers)
    assert entries.status_code == 200 and "organization.zenodo_settings" in entries.text
    assert TOKEN not in entries.text
    with world.app.state.sessionmaker() as session:  # stored sealed, for the hub's own calls
        row = session.get(CatalogueSettings, world.org_b)
        assert row is not None and row.zenodo_token is not None
        assert TOKEN not in row.zenodo_token and row.zenodo_token.startswith("enc:v1:")
        assert unseal(world.app.state.settings.secret_key, row.zenodo_token) == TOKEN
        raw = session.execute(sa.text("SELECT zenodo_token FROM catalogue_settings")).scalars()
        assert all(TOKEN not in (value or "") for value in raw)
    database = Path(make_url(str(world.app.state.engine.url)).database or "")
    for path in (database, Path(f"{database}-wal")):  # not in the files either
        assert not path.exists() or TOKEN.encode() not in path.read_bytes()


def test_a_zenodo_url_off_the_allow_list_is_refused_and_never_called(
    world: World, zenodo: ZenodoServer
) -> None:
    settings = world.app.state.settings
    assert settings.zenodo_urls[:2] == ["https://zenodo.org", "https://sandbox.zenodo.org"]
    for url in ("http://169.254.169.254/latest", "https://zenodo.org.evil.example", "http://x"):
        response = world.api.put(
            f"/api/organizations/{world.org_b}/zenodo",
            json={"url": url, "token": TOKEN},
            headers=world.org_admin.headers,
        )
        assert response.status_code == 422, response.text
        assert "not allowed" in response.json()["detail"] and TOKEN not in response.text
    with world.app.state.sessionmaker() as session:
        assert session.get(CatalogueSettings, world.org_b) is None  # nothing stored

    # a URL stored before the allow-list shrank is refused when used: no request leaves
    assert _configure(world, zenodo).status_code == 200
    settings.zenodo_urls = [u for u in settings.zenodo_urls if u != zenodo.url]
    dataset_id = in_state(world, "released")
    response = move(world, world.org_admin.headers, dataset_id, "publish")
    assert response.status_code == 422 and "not allowed" in response.json()["detail"]
    assert zenodo.calls == []
    assert state_of(world, dataset_id)["state"] == "released"


def test_publish_deposits_metadata_and_the_doi_becomes_the_pid(
    world: World, zenodo: ZenodoServer
) -> None:
    assert _configure(world, zenodo).status_code == 200
    dataset_id = in_state(world, "released")
    assert state_of(world, dataset_id)["pid"] == f"mfd.{dataset_id}"
    response = move(world, world.org_admin.headers, dataset_id, "publish")
    assert response.status_code == 200, response.text
    record = response.json()
    (deposition,) = zenodo.depositions.values()
    doi = deposition["doi"]
    assert record["state"] == "published" and record["pid"] == doi
    assert [c[:2] for c in zenodo.calls] == [
        ("POST", "create"),
        ("PUT", "update"),
        ("POST", "publish"),
    ]
    metadata = deposition["metadata"]
    assert metadata["upload_type"] == "dataset" and metadata["title"] == "study"
    assert metadata["creators"] == [{"name": "Org B"}]
    assert "files" not in deposition  # metadata only, never data
    assert [d["status"] for d in _depositions(world, dataset_id)] == ["published"]
    # both the DOI and the hub pid resolve to the version
    for pid in (doi, f"mfd.{dataset_id}"):
        found = world.api.get(f"/pid/{pid}", params={"format": "json"})
        assert found.status_code == 200 and found.json()["dataset_id"] == dataset_id
    datacite = world.api.get(f"/api/datasets/{dataset_id}/datacite").json()["data"]["attributes"]
    assert datacite["doi"] == doi

    # invalidation withdraws the published record (Zenodo cannot delete it)
    response = move(world, world.org_admin.headers, dataset_id, "invalidate", "consent withdrawn")
    assert response.status_code == 200
    assert deposition["metadata"]["title"] == "[WITHDRAWN] study"
    assert "consent withdrawn" in deposition["metadata"]["description"]
    assert deposition["submitted"] is True
    assert [d["status"] for d in _depositions(world, dataset_id)] == ["withdrawn"]
    tomb = world.api.get(f"/pid/{doi}", params={"format": "json"}).json()
    assert tomb["tombstone"] is True


def test_a_failure_half_way_leaves_nothing_half_published(
    world: World, zenodo: ZenodoServer
) -> None:
    assert _configure(world, zenodo).status_code == 200
    dataset_id = in_state(world, "released")
    before = state_of(world, dataset_id)
    zenodo.fail[("POST", "publish")] = 500
    response = move(world, world.org_admin.headers, dataset_id, "publish")
    assert response.status_code == 502, response.text
    assert "failed at 'publish'" in response.json()["detail"]
    after = state_of(world, dataset_id)
    assert (after["state"], after["pid"]) == ("released", f"mfd.{dataset_id}")
    assert after == before
    assert zenodo.depositions == {}  # the draft deposition was deleted at Zenodo
    assert [c[1] for c in zenodo.calls] == ["create", "update", "publish", "delete"]
    (failed,) = _depositions(world, dataset_id)
    assert failed["status"] == "deleted" and "HTTP 500" in failed["error"]
    # a later try publishes
    retry = move(world, world.org_admin.headers, dataset_id, "publish")
    assert retry.status_code == 200 and retry.json()["pid"].startswith("10.5072/zenodo.")
    assert [d["status"] for d in _depositions(world, dataset_id)] == ["deleted", "published"]


def test_an_undeletable_draft_is_recorded_for_retry(world: World, zenodo: ZenodoServer) -> None:
    assert _configure(world, zenodo).status_code == 200
    dataset_id = in_state(world, "released")
    zenodo.fail[("PUT", "update")] = 503
    zenodo.fail[("DELETE", "delete")] = 500
    response = move(world, world.org_admin.headers, dataset_id, "publish")
    assert response.status_code == 502 and "failed at 'set metadata'" in response.json()["detail"]
    assert state_of(world, dataset_id)["state"] == "released"
    (orphan,) = _depositions(world, dataset_id)
    (left,) = zenodo.depositions.values()
    assert orphan["status"] == "orphaned" and orphan["deposition_id"] == left["id"]
    assert left["submitted"] is False  # never published


def test_a_wrong_token_changes_nothing(world: World, zenodo: ZenodoServer) -> None:
    assert _configure(world, zenodo, token="wrong").status_code == 200
    dataset_id = in_state(world, "released")
    response = move(world, world.org_admin.headers, dataset_id, "publish")
    assert response.status_code == 502 and "HTTP 401" in _depositions(world, dataset_id)[0]["error"]
    assert state_of(world, dataset_id)["state"] == "released"
    assert zenodo.depositions == {}
