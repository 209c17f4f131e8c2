"""``client.catalogue`` against the real hub (httpx over the app): typed results, errors."""

from __future__ import annotations

import pytest

from cataloguetools import register
from hubtools import SQLITE_ONLY, World
from medfed.common.catalogue_resources import CatalogueResults, DatasetRecord, PidRecord
from medfed.common.errors import BadRequest, Conflict, NotFound
from medfed.sdk.client import Client

pytestmark = SQLITE_ONLY


def test_the_sdk_walks_the_lifecycle_with_typed_results(world: World) -> None:
    bert = Client(url="http://hub", token=world.org_admin.token, http_client=world.api)
    dataset_id = register(world, world.node_b, "study")["id"]
    edited = bert.catalogue.update(dataset_id, title="Study", duo_codes=["GRU"], themes=["HEAL"])
    assert isinstance(edited, DatasetRecord) and edited.duo_codes == ["GRU"]
    with pytest.raises(BadRequest, match="unknown DUO code"):
        bert.catalogue.update(dataset_id, duo_codes=["NOPE"])
    assert bert.catalogue.release(dataset_id).state == "released"
    with pytest.raises(Conflict, match="cannot release"):
        bert.catalogue.release(dataset_id)
    published = bert.catalogue.publish(dataset_id)
    assert (published.state, published.pid) == ("published", f"mfd.{dataset_id}")
    anonymous = Client(url="http://hub", http_client=world.api)
    found = anonymous.catalogue.search("study", theme="HEAL")
    assert isinstance(found, CatalogueResults)
    assert [d.id for d in found.results] == [dataset_id]
    assert anonymous.catalogue.show(dataset_id).title == "Study"
    assert anonymous.catalogue.dcat(dataset_id)["@type"] == "dcat:Dataset"
    attributes = anonymous.catalogue.datacite(dataset_id)["data"]["attributes"]
    assert attributes["types"]["resourceTypeGeneral"] == "Dataset"
    pid = anonymous.catalogue.resolve(f"mfd.{dataset_id}")
    assert isinstance(pid, PidRecord) and pid.dataset_id == dataset_id
    assert bert.catalogue.invalidate(dataset_id, "wrong cohort").label == (
        "INVALIDATED: wrong cohort"
    )
    assert anonymous.catalogue.resolve(f"mfd.{dataset_id}").tombstone is True
    assert bert.catalogue.reactivate(dataset_id).state == "published"
    assert [v.version for v in bert.catalogue.versions(dataset_id)] == [1]
    with pytest.raises(NotFound):
        anonymous.catalogue.show(world.node_a.dataset_id)  # released, not public
