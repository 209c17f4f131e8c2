"""Catalogue metadata of a dataset version: editing a draft, the record, DCAT-AP and DataCite.

The node sends name, description, columns, a rounded row count, its manifest root and
the catalogue aggregates (``Dataset.summary``); the dataset's authors add the DCAT-AP /
HealthDCAT-AP metadata (title, keywords, themes, access rights and conditions, DUO codes
checked with ``medfed.common.duo``, numbers of unique individuals and records, a contact
point and a licence) while the version is a draft — released versions are frozen. Once its
authors have written a description, the node's description no longer replaces it
(``Dataset.described``). The exports are pure functions of the
stored version: :func:`dcat` (JSON-LD) and :func:`datacite` (DataCite JSON,
``resourceTypeGeneral=Dataset``, ``IsNewVersionOf`` the previous version).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from medfed.common import duo
from medfed.common.catalogue_resources import (
    EMAIL,
    Aggregates,
    DatasetMetadataUpdate,
    DatasetRecord,
)
from medfed.common.errors import Conflict
from medfed.common.resources import DatasetPublic
from medfed.common.schemas import ColumnSchema
from medfed.common.timeutil import utcnow
from medfed.hub.db.models import Dataset, Node, Organization, User
from medfed.hub.services.catalogue import lifecycle
from medfed.hub.services.catalogue.pids import label_of
from medfed.hub.services.ledger import actor_of, record
from medfed.ledger.entries import content_hash

__all__ = ["aggregates_of", "datacite", "dcat", "pid_url", "record_of", "update_metadata"]

EU_THEME = "http://publications.europa.eu/resource/authority/data-theme/"
EU_ACCESS_RIGHT = "http://publications.europa.eu/resource/authority/access-right/"
DUO_IRI = "http://purl.obolibrary.org/obo/"
CONTEXT = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "adms": "http://www.w3.org/ns/adms#",
    "healthdcatap": "http://healthdataportal.eu/ns/health#",
    "odrl": "http://www.w3.org/ns/odrl/2/",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "vcard": "http://www.w3.org/2006/vcard/ns#",
}
SPDX = "https://spdx.org/licenses/"
AGGREGATE_KEYS = ("sex", "age_bands", "diagnoses", "modalities", "body_parts")


def update_metadata(
    session: Session, *, actor: User, dataset_id: int, body: DatasetMetadataUpdate
) -> Dataset:
    """Change a draft's catalogue metadata (its authors only); everything checked first."""
    dataset = lifecycle.visible_dataset(session, dataset_id, actor)
    lifecycle.require_author(session, actor, dataset, "editing the metadata of")
    if dataset.state != lifecycle.State.draft.value:
        raise Conflict(
            f"dataset {dataset.id} is {dataset.state}: its metadata is frozen "
            "(a change needs a new version)"
        )
    changes = body.model_dump(exclude_unset=True)
    if "duo_codes" in changes and changes["duo_codes"] is not None:
        changes["duo_codes"] = duo.validate_codes(changes["duo_codes"])
    for key in ("keywords", "themes"):
        if changes.get(key) is not None:
            changes[key] = list(dict.fromkeys(w.strip() for w in changes[key] if w.strip()))
    for key, value in changes.items():
        if value is None and key in ("keywords", "themes", "access_conditions", "duo_codes"):
            value = []
        if value is None and key in ("description", "access_rights"):
            continue  # not nullable: leaving it out and sending null mean the same
        setattr(dataset, key, value)
    if changes.get("description") is not None:
        dataset.described = True
    dataset.updated_at = utcnow()
    session.flush()
    record(
        session,
        action="dataset.metadata",
        actor=actor_of(actor),
        objects={"dataset": dataset.id, "node": dataset.node_id},
        hashes={"metadata": content_hash(lifecycle.metadata_snapshot(dataset))},
    )
    return dataset


def aggregates_of(dataset: Dataset) -> Aggregates:
    summary = dataset.summary or {}
    return Aggregates.model_validate(
        {k: summary[k] for k in AGGREGATE_KEYS if isinstance(summary.get(k), dict)}
    )


def public_of(dataset: Dataset) -> DatasetPublic:
    """A dataset version as the dataset list and the node API show it."""
    return DatasetPublic(
        id=dataset.id,
        node_id=dataset.node_id,
        node_name=dataset.node.name,
        name=dataset.name,
        description=dataset.description,
        columns=[ColumnSchema.model_validate(c) for c in dataset.columns],
        row_count=dataset.row_count,
        summary=dataset.summary,
        updated_at=dataset.updated_at,
        version=dataset.version,
        state=dataset.state,
        pid=dataset.pid,
        previous_id=dataset.previous_id,
        next_id=dataset.next_id,
        manifest_root=dataset.manifest_root,
    )


def record_of(session: Session, dataset: Dataset) -> DatasetRecord:
    """The catalogue record: :func:`public_of` plus the DCAT metadata and lifecycle times."""
    node = session.get(Node, dataset.node_id)
    assert node is not None
    return DatasetRecord(
        **public_of(dataset).model_dump(),
        organization_id=node.organization_id,
        label=label_of(dataset),
        title=dataset.title,
        keywords=dataset.keywords,
        themes=dataset.themes,
        access_rights=dataset.access_rights,
        access_conditions=dataset.access_conditions,
        duo_codes=dataset.duo_codes,
        unique_individuals=dataset.unique_individuals,
        records=dataset.records,
        contact=dataset.contact,
        license=dataset.license,
        aggregates=aggregates_of(dataset),
        invalidation_reason=dataset.invalidation_reason,
        created_at=dataset.created_at,
        released_at=dataset.released_at,
        published_at=dataset.published_at,
        invalidated_at=dataset.invalidated_at,
        reactivated_at=dataset.reactivated_at,
    )


def pid_url(base_url: str, dataset: Dataset) -> str:
    """Where a version's pid resolves (its DOI, if it has one, resolves at doi.org too)."""
    return f"{base_url.rstrip('/')}/pid/{dataset.pid or f'mfd.{dataset.id}'}"


def _publisher(session: Session, dataset: Dataset) -> str:
    node = session.get(Node, dataset.node_id)
    assert node is not None
    org = session.get(Organization, node.organization_id)
    return org.name if org is not None else node.name


def _theme_iri(theme: str) -> str:
    if theme.startswith(("http://", "https://")):
        return theme
    return EU_THEME + theme.upper() if theme.isalpha() and len(theme) == 4 else theme


def _duo_iri(code: str) -> dict[str, Any]:
    base, _, param = code.partition(":")
    term = duo.TERMS.get(base)
    iri = DUO_IRI + term.id.replace(":", "_") if term is not None else code
    out: dict[str, Any] = {"@id": iri, "dct:identifier": code}
    if param:
        out["odrl:rightOperand"] = param
    return out


def _contact_point(contact: str) -> dict[str, Any]:
    """A ``vcard:Kind`` from "Name <address>", an e-mail address or a web address."""
    point: dict[str, Any] = {"@type": "vcard:Kind"}
    email = EMAIL.search(contact)
    if email is not None:
        point["vcard:hasEmail"] = {"@id": f"mailto:{email.group(0)}"}
        name = contact.replace(email.group(0), "").strip(" <>()")
    elif contact.startswith(("http://", "https://")):
        point["vcard:hasURL"] = {"@id": contact}
        name = ""
    else:
        name = contact
    if name:
        point["vcard:fn"] = name
    return point


def _license(license_: str) -> dict[str, str]:
    if license_.startswith(("http://", "https://")):
        return {"@id": license_}
    return {"@id": SPDX + license_}


def _version_link(session: Session, base_url: str, dataset_id: int | None) -> Any:
    if dataset_id is None:
        return None
    other = session.get(Dataset, dataset_id)
    return None if other is None else {"@id": pid_url(base_url, other)}


def dcat(session: Session, dataset: Dataset, *, base_url: str) -> dict[str, Any]:
    """The version as a DCAT-AP / HealthDCAT-AP ``dcat:Dataset`` in JSON-LD."""
    issued = dataset.published_at or dataset.released_at
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@id": pid_url(base_url, dataset),
        "@type": "dcat:Dataset",
        "dct:identifier": dataset.pid or f"mfd.{dataset.id}",
        "dct:title": dataset.title or dataset.name,
        "dct:description": dataset.description,
        "dcat:keyword": list(dataset.keywords),
        "dcat:theme": [{"@id": _theme_iri(t)} for t in dataset.themes],
        "dcat:version": str(dataset.version),
        "adms:status": dataset.state,
        "dct:accessRights": {"@id": EU_ACCESS_RIGHT + dataset.access_rights},
        "dct:publisher": {"@type": "foaf:Agent", "foaf:name": _publisher(session, dataset)},
        "dct:modified": {"@value": dataset.updated_at.isoformat(), "@type": "xsd:dateTime"},
        "healthdcatap:numberOfUniqueIndividuals": dataset.unique_individuals,
        "healthdcatap:numberOfRecords": dataset.records,
        "odrl:hasPolicy": {
            "@type": "odrl:Offer",
            "odrl:permission": [_duo_iri(c) for c in dataset.duo_codes],
        },
        "dcat:distribution": [
            {
                "@type": "dcat:Distribution",
                "dct:title": condition,
                "dcat:accessURL": {"@id": pid_url(base_url, dataset)},
                "dct:accessRights": {"@id": EU_ACCESS_RIGHT + dataset.access_rights},
            }
            for condition in dataset.access_conditions
        ],
        "healthdcatap:hasAggregates": aggregates_of(dataset).model_dump(exclude_none=True),
        "healthdcatap:manifestRoot": dataset.manifest_root,
    }
    if dataset.contact:
        doc["dcat:contactPoint"] = _contact_point(dataset.contact)
    if dataset.license:
        doc["dct:license"] = _license(dataset.license)
    if issued is not None:
        doc["dct:issued"] = {"@value": issued.isoformat(), "@type": "xsd:dateTime"}
    previous = _version_link(session, base_url, dataset.previous_id)
    if previous is not None:
        doc["dcat:previousVersion"] = previous
    following = _version_link(session, base_url, dataset.next_id)
    if following is not None:
        doc["dct:isReplacedBy"] = following
    return {k: v for k, v in doc.items() if v is not None}


def _identifier(base_url: str, dataset: Dataset) -> dict[str, str]:
    pid = dataset.pid or f"mfd.{dataset.id}"
    if pid.startswith("10."):
        return {"relatedIdentifier": pid, "relatedIdentifierType": "DOI"}
    return {"relatedIdentifier": pid_url(base_url, dataset), "relatedIdentifierType": "URL"}


def _datacite_rights(license_: str) -> dict[str, str]:
    if license_.startswith(("http://", "https://")):
        return {"rights": license_, "rightsUri": license_}
    return {"rights": license_, "rightsUri": SPDX + license_, "rightsIdentifier": license_}


def datacite(session: Session, dataset: Dataset, *, base_url: str) -> dict[str, Any]:
    """The version as DataCite JSON (REST API ``dois`` resource attributes)."""
    pid = dataset.pid or f"mfd.{dataset.id}"
    issued = dataset.published_at or dataset.released_at or dataset.created_at
    related: list[dict[str, str]] = []
    for other_id, relation in (
        (dataset.previous_id, "IsNewVersionOf"),
        (dataset.next_id, "IsPreviousVersionOf"),
    ):
        other = session.get(Dataset, other_id) if other_id is not None else None
        if other is not None:
            related.append({**_identifier(base_url, other), "relationType": relation})
    publisher = _publisher(session, dataset)
    attributes: dict[str, Any] = {
        "doi": pid if pid.startswith("10.") else None,
        "identifiers": [
            {
                "identifier": pid,
                "identifierType": "DOI" if pid.startswith("10.") else "medfed pid",
            }
        ],
        "url": pid_url(base_url, dataset),
        "types": {"resourceTypeGeneral": "Dataset", "resourceType": "Dataset"},
        "titles": [{"title": dataset.title or dataset.name}],
        "creators": [{"name": publisher, "nameType": "Organizational"}],
        "publisher": publisher,
        "publicationYear": issued.year,
        "version": str(dataset.version),
        "subjects": [{"subject": k} for k in dataset.keywords],
        "descriptions": [{"description": dataset.description, "descriptionType": "Abstract"}],
        "rightsList": [
            {"rights": dataset.access_rights, "rightsUri": EU_ACCESS_RIGHT + dataset.access_rights}
        ]
        + ([_datacite_rights(dataset.license)] if dataset.license else []),
        "relatedIdentifiers": related,
        "dates": [{"date": issued.date().isoformat(), "dateType": "Issued"}],
    }
    return {"data": {"type": "dois", "attributes": attributes}}
