"""Catalogue metadata: editing drafts (DUO codes checked), DCAT-AP / DataCite exports, search.

The exports are checked for the fields that DCAT-AP / HealthDCAT-AP and DataCite name;
the faceted search for what each kind of caller sees and for its facet counts.
"""

from __future__ import annotations

from typing import Any

from cataloguetools import move, register
from hubtools import SQLITE_ONLY, World

pytestmark = SQLITE_ONLY

METADATA = {
    "title": "Breast cancer cohort",
    "description": "GBSG2-like follow-up of 686 patients",
    "keywords": ["breast cancer", "survival"],
    "themes": ["HEAL"],
    "access_rights": "RESTRICTED",
    "access_conditions": ["REMOTE_PROCESSING"],
    "duo_codes": ["hmb", "IRB", "DS:breast cancer"],
    "unique_individuals": 680,
    "records": 686,
}


def _edit(world: World, dataset_id: int, body: dict[str, Any]) -> Any:
    return world.api.patch(
        f"/api/datasets/{dataset_id}/metadata", json=body, headers=world.org_admin.headers
    )


def test_metadata_edit_checks_duo_codes_and_bad_input_changes_nothing(world: World) -> None:
    dataset_id = register(world, world.node_b, "study")["id"]
    edited = _edit(world, dataset_id, METADATA)
    assert edited.status_code == 200, edited.text
    assert edited.json()["duo_codes"] == ["HMB", "IRB", "DS:breast cancer"]  # canonical
    before = world.count("ledger_entries")
    for body, needle in [
        ({"duo_codes": ["XYZ"]}, "unknown DUO code"),
        ({"access_rights": "OPEN"}, "access_rights"),
        ({"access_conditions": ["EMAIL"]}, "access_conditions"),
        ({"records": -1}, "records"),
    ]:
        response = _edit(world, dataset_id, {**body, "title": "changed"})
        assert response.status_code == 422, response.text
        assert needle in response.json()["detail"]
    assert world.count("ledger_entries") == before
    record = world.api.get(f"/api/catalogue/{dataset_id}", headers=world.admin.headers).json()
    assert record["title"] == METADATA["title"]


def _two_versions(world: World) -> tuple[int, int]:
    summary = {"kind": "imaging", "modalities": {"MR": 40, "CT": "<k"}, "sex": {"F": 40}}
    v1 = register(world, world.node_b, "study", summary=summary)["id"]
    assert _edit(world, v1, METADATA).status_code == 200
    assert move(world, world.admin.headers, v1, "release").status_code == 200
    v2 = register(world, world.node_b, "study", row_count=200, summary=summary)["id"]
    assert move(world, world.admin.headers, v2, "release").status_code == 200
    assert move(world, world.admin.headers, v2, "publish").status_code == 200
    return v1, v2


def test_dcat_export_is_dcat_ap_json_ld(world: World) -> None:
    v1, v2 = _two_versions(world)
    response = world.api.get(f"/api/datasets/{v2}/dcat")  # published: anonymous may read
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/ld+json")
    doc = response.json()
    assert doc["@context"]["dcat"] == "http://www.w3.org/ns/dcat#"
    assert doc["@type"] == "dcat:Dataset"
    assert doc["@id"].endswith(f"/pid/mfd.{v2}") and doc["dct:identifier"] == f"mfd.{v2}"
    assert doc["dct:title"] == METADATA["title"]  # carried over from version 1
    assert doc["dcat:keyword"] == METADATA["keywords"]
    assert doc["dcat:theme"] == [
        {"@id": "http://publications.europa.eu/resource/authority/data-theme/HEAL"}
    ]
    assert doc["dcat:version"] == "2"
    assert doc["dct:accessRights"]["@id"].endswith("/access-right/RESTRICTED")
    assert doc["healthdcatap:numberOfUniqueIndividuals"] == 680
    assert doc["healthdcatap:numberOfRecords"] == 686
    assert doc["dcat:previousVersion"]["@id"].endswith(f"/pid/mfd.{v1}")
    duo_ids = [p["@id"] for p in doc["odrl:hasPolicy"]["odrl:permission"]]
    assert duo_ids == [
        "http://purl.obolibrary.org/obo/DUO_0000006",
        "http://purl.obolibrary.org/obo/DUO_0000021",
        "http://purl.obolibrary.org/obo/DUO_0000007",
    ]
    assert [d["dct:title"] for d in doc["dcat:distribution"]] == ["REMOTE_PROCESSING"]
    assert doc["healthdcatap:hasAggregates"]["modalities"] == {"MR": 40, "CT": "<k"}
    # version 1 is released, not published: anonymous callers do not get its metadata
    assert world.api.get(f"/api/datasets/{v1}/dcat").status_code == 404
    old = world.api.get(f"/api/datasets/{v1}/dcat", headers=world.admin.headers).json()
    assert old["dct:isReplacedBy"]["@id"].endswith(f"/pid/mfd.{v2}")


def test_datacite_export_names_the_previous_version(world: World) -> None:
    v1, v2 = _two_versions(world)
    data = world.api.get(f"/api/datasets/{v2}/datacite").json()["data"]
    assert data["type"] == "dois"
    attributes = data["attributes"]
    assert attributes["types"]["resourceTypeGeneral"] == "Dataset"
    assert attributes["titles"] == [{"title": METADATA["title"]}]
    assert attributes["creators"] == [{"name": "Org B", "nameType": "Organizational"}]
    assert attributes["publisher"] == "Org B" and attributes["version"] == "2"
    assert attributes["identifiers"][0]["identifier"] == f"mfd.{v2}"
    (related,) = attributes["relatedIdentifiers"]
    assert related["relationType"] == "IsNewVersionOf"
    assert related["relatedIdentifierType"] == "URL"
    assert related["relatedIdentifier"].endswith(f"/pid/mfd.{v1}")
    assert {"subject": "survival"} in attributes["subjects"]


def test_faceted_search_filters_and_counts(world: World) -> None:
    def dataset(name: str, summary: dict[str, Any], **meta: Any) -> int:
        dataset_id = int(register(world, world.node_b, name, summary=summary)["id"])
        assert _edit(world, dataset_id, meta).status_code == 200
        for step in ("release", "publish"):
            assert move(world, world.admin.headers, dataset_id, step).status_code == 200
        return dataset_id

    mr = {"modalities": {"MR": 30}}
    ct = {"modalities": {"CT": 12, "MR": 8}}
    brain = dataset(
        "brain",
        mr,
        title="Brain MRI",
        themes=["HEAL"],
        keywords=["Glioma"],
        duo_codes=["GRU"],
        access_rights="PUBLIC",
    )
    lung = dataset(
        "lung",
        ct,
        title="Lung CT",
        themes=["HEAL", "TECH"],
        keywords=["cancer"],
        duo_codes=["DS:lung cancer", "NCU"],
        access_rights="RESTRICTED",
    )
    hidden = register(world, world.node_b, "draft-only")["id"]  # a draft: authors only

    def found(params: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        response = world.api.get("/api/catalogue", params=params, headers=headers or {})
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    everything = found({})
    assert {d["id"] for d in everything["results"]} == {brain, lung}
    assert everything["total"] == 2
    facets = {k: {c["value"]: c["count"] for c in v} for k, v in everything["facets"].items()}
    assert facets["modality"] == {"MR": 2, "CT": 1}
    assert facets["theme"] == {"HEAL": 2, "TECH": 1}
    assert facets["duo"] == {"GRU": 1, "DS": 1, "DS:lung cancer": 1, "NCU": 1}
    assert facets["access_rights"] == {"PUBLIC": 1, "RESTRICTED": 1}
    assert facets["state"] == {"published": 2}

    assert [d["id"] for d in found({"q": "brain mri"})["results"]] == [brain]
    assert [d["id"] for d in found({"modality": "CT"})["results"]] == [lung]
    assert [d["id"] for d in found({"duo": "DS"})["results"]] == [lung]
    assert [d["id"] for d in found({"keyword": "glioma"})["results"]] == [brain]
    assert [d["id"] for d in found({"theme": "TECH", "access_rights": "PUBLIC"})["results"]] == []
    both = found({"modality": ["CT", "MR"], "theme": "HEAL"})
    assert both["total"] == 2  # values of one facet OR-ed, facets AND-ed
    narrowed = found({"modality": "CT"})["facets"]["modality"]
    assert {c["value"]: c["count"] for c in narrowed} == {"CT": 1, "MR": 1}
    # the organization's admin also sees its draft and the world's datasets of org B
    mine = found({"state": "draft"}, world.org_admin.headers)
    assert [d["id"] for d in mine["results"]] == [hidden]
    assert found({"state": "draft"})["total"] == 0
