"""What the catalogue, dataset, admin and project pages show, from the API's services.

Each function calls the service that the JSON API calls (catalogue search, visibility
and lifecycle; the access service's entitlements) and shapes its answer for a template:
facet links, labels, the lifecycle moves to offer, the describe form of a draft (its
fields as text, and back: :func:`describe_body`). None decides who may see or do what;
the services do, and their errors reach the page unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from pydantic import ValidationError
from sqlalchemy.orm import Session

from medfed.common import duo
from medfed.common.catalogue_resources import DatasetMetadataUpdate, DatasetRecord
from medfed.common.errors import BadRequest
from medfed.common.timeutil import utcnow
from medfed.hub.db.models import Dataset, Project, User
from medfed.hub.db.models_access import Entitlement
from medfed.hub.services import accounts, projects
from medfed.hub.services import datasets as dataset_service
from medfed.hub.services.access import entitlements
from medfed.hub.services.catalogue import lifecycle, metadata
from medfed.hub.services.catalogue import search as catalogue_search


@dataclass
class FacetValue:
    value: str
    count: int
    chosen: bool
    href: str


@dataclass
class Facet:
    name: str
    label: str
    values: list[FacetValue] = field(default_factory=list)


@dataclass
class SearchView:
    items: list[DatasetRecord]
    total: int
    facets: list[Facet]


FACET_LABELS = {
    "keyword": "Keywords",
    "theme": "Themes",
    "modality": "Modalities",
    "duo": "Data use (DUO)",
    "access_rights": "Access rights",
    "node": "Node",
    "state": "State",
}


def _facet_href(q: str, chosen: dict[str, list[str]], name: str, value: str) -> str:
    """The catalogue URL with ``name=value`` toggled and everything else kept."""
    pairs: list[tuple[str, str]] = [("q", q)] if q else []
    for key, values in chosen.items():
        pairs.extend((key, v) for v in values if not (key == name and v == value))
    if value not in chosen.get(name, []):
        pairs.append((name, value))
    return "/catalogue" + (f"?{urlencode(pairs)}" if pairs else "")


def search(
    session: Session, *, user: User | None, q: str, chosen: dict[str, list[str]]
) -> SearchView:
    """The catalogue service's search, with each facet value as a link that toggles it."""
    filters: dict[str, Sequence[str]] = dict(chosen)
    found = catalogue_search.search(session, user=user, q=q, filters=filters, limit=200)
    facets = []
    for name, label in FACET_LABELS.items():
        picked = chosen.get(name, [])
        values = [
            FacetValue(f.value, f.count, f.value in picked, _facet_href(q, chosen, name, f.value))
            for f in found.facets.get(name, [])
        ]
        # a chosen value that no result has any more stays visible, so it can be unchosen
        shown = {v.value for v in values}
        values += [
            FacetValue(v, 0, True, _facet_href(q, chosen, name, v))
            for v in picked
            if v not in shown
        ]
        facets.append(Facet(name, label, values))
    return SearchView(found.results, found.total, facets)


@dataclass
class DatasetView:
    dataset: DatasetRecord
    title: str
    organization: str
    pid_href: str
    duo_labels: list[str]
    aggregates: list[tuple[str, list[tuple[str, Any]]]]
    can_apply: bool
    is_author: bool
    actions: list[str]
    can_describe: bool = False
    form: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _duo_label(code: str) -> str:
    try:
        return duo.label(code)
    except KeyError:
        return code


def dataset_view(session: Session, *, user: User | None, dataset_id: int) -> DatasetView:
    """A version as the catalogue shows it to ``user`` (NotFound if it may not see it)."""
    dataset = lifecycle.visible_dataset(session, dataset_id, user)
    record = metadata.record_of(session, dataset)
    aggregates = [
        (name.replace("_", " "), [(str(k), v) for k, v in values.items()])
        for name, values in record.aggregates.model_dump(exclude_none=True).items()
    ]
    row = lifecycle_row(session, dataset, user)
    return DatasetView(
        dataset=record,
        title=record.title or record.name,
        organization=accounts.get_organization(session, record.organization_id).name,
        pid_href=f"/pid/{record.pid}" if record.pid else "",
        duo_labels=[_duo_label(c) for c in record.duo_codes],
        aggregates=aggregates,
        can_apply=user is not None and lifecycle.is_usable(dataset),
        is_author=lifecycle.is_author(session, user, dataset),
        actions=row.actions,
        can_describe=lifecycle.is_author(session, user, dataset)
        and dataset.state == lifecycle.State.draft.value,
        form=describe_form(record),
    )


# the describe form: field name → label (the order of the form)
DESCRIBE_FIELDS = {
    "title": "Title",
    "description": "Description",
    "keywords": "Keywords",
    "themes": "Themes",
    "duo_codes": "DUO codes",
    "contact": "Contact",
    "license": "Licence",
    "access_rights": "Access rights",
    "access_conditions": "Access conditions",
    "unique_individuals": "Unique individuals",
    "records": "Records",
}
LIST_FIELDS = ("keywords", "themes", "duo_codes")
NUMBER_FIELDS = ("unique_individuals", "records")


def describe_form(record: DatasetRecord) -> dict[str, Any]:
    """A version's metadata as the describe form shows it (lists as comma lists)."""
    form: dict[str, Any] = {}
    for name in DESCRIBE_FIELDS:
        value = getattr(record, name)
        if name in LIST_FIELDS:
            form[name] = ", ".join(value)
        elif name == "access_conditions":
            form[name] = list(value)
        else:
            form[name] = "" if value is None else str(value)
    return form


def describe_body(form: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The form's fields as a metadata update, or the problems, one per field, by label.

    Every field is sent: an empty one clears the value (a form shows what is stored).
    """
    errors: list[str] = []
    body: dict[str, Any] = {}
    for name, label in DESCRIBE_FIELDS.items():
        raw = form.get(name)
        if name == "access_conditions":
            body[name] = [str(v) for v in raw or []]
            continue
        text = str(raw or "").strip()
        if name in LIST_FIELDS:
            body[name] = [w.strip() for w in text.split(",") if w.strip()]
        elif name in NUMBER_FIELDS:
            if text and not text.isdigit():
                errors.append(f"{label}: must be a whole number, not '{text}'")
            body[name] = int(text) if text.isdigit() else None
        elif name == "access_rights":
            body[name] = text or "NON_PUBLIC"
        else:
            body[name] = text or (None if name != "description" else "")
    if errors:
        return {}, errors
    try:
        checked = DatasetMetadataUpdate.model_validate(body)
    except ValidationError as exc:
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else ""
            message = str(error["msg"]).removeprefix("Value error, ")
            errors.append(f"{DESCRIBE_FIELDS.get(name, name)}: {message}")
        return {}, errors
    try:
        duo.validate_codes(checked.duo_codes or [])
    except BadRequest as exc:
        return {}, [f"DUO codes: {exc.message}"]
    return checked.model_dump(exclude_unset=True), []


@dataclass
class LifecycleRow:
    dataset: Dataset
    title: str
    version: int
    state: str
    actions: list[str]


def lifecycle_row(session: Session, dataset: Dataset, user: User | None) -> LifecycleRow:
    """A dataset with the moves the lifecycle matrix allows from its state (authors only)."""
    actions: list[str] = []
    if lifecycle.is_author(session, user, dataset):
        state = lifecycle.State(dataset.state)
        actions = [t.value for (s, t) in lifecycle.MATRIX if s == state]
    title = dataset.title or dataset.name
    return LifecycleRow(dataset, title, dataset.version, dataset.state, actions)


def change_lifecycle(
    session: Session, *, actor: User, dataset_id: int, action: str, reason: str
) -> Dataset:
    try:
        move = lifecycle.Transition(action)
    except ValueError:
        known = ", ".join(t.value for t in lifecycle.Transition)
        raise BadRequest(f"unknown lifecycle action {action!r} (known: {known})") from None
    return lifecycle.transition(
        session, actor=actor, dataset_id=dataset_id, move=move, reason=reason
    )


@dataclass
class EntitlementRow:
    project_id: int
    project_name: str
    dataset_id: int
    dataset_name: str
    granted: str
    ends: str
    state: str


def _entitlement_rows(session: Session, rows: list[Entitlement]) -> list[EntitlementRow]:
    now = utcnow()
    out = []
    for e in rows:
        project = session.get(Project, e.project_id)
        dataset = session.get(Dataset, e.dataset_id)
        out.append(
            EntitlementRow(
                project_id=e.project_id,
                project_name=project.name if project else str(e.project_id),
                dataset_id=e.dataset_id,
                dataset_name=(
                    f"{dataset.title or dataset.name} v{dataset.version} at {dataset.node.name}"
                    if dataset
                    else str(e.dataset_id)
                ),
                granted=e.starts_at.strftime("%Y-%m-%d"),
                ends=e.ends_at.strftime("%Y-%m-%d"),
                state=entitlements.status_of(e, now),
            )
        )
    return out


def entitlements_of_user(session: Session, *, user: User) -> list[EntitlementRow]:
    """Entitlements of the user's projects (as the access service lists them)."""
    mine = {p.id for p in projects.list_projects(session, actor=user)}
    rows = entitlements.list_entitlements(session, user=user)
    return _entitlement_rows(session, [e for e in rows if e.project_id in mine])


def entitlements_of_project(
    session: Session, *, user: User, project_id: int
) -> list[EntitlementRow]:
    rows = entitlements.list_entitlements(session, user=user, project_id=project_id)
    return _entitlement_rows(session, rows)


def usable_datasets(session: Session, *, user: User, project_id: int) -> list[Dataset]:
    """Dataset versions the project may run tasks on now: an active entitlement, usable."""
    now = utcnow()
    ids = {
        e.dataset_id
        for e in entitlements.list_entitlements(session, user=user, project_id=project_id)
        if entitlements.status_of(e, now) == "active"
    }
    found = [dataset_service.get_dataset(session, i) for i in sorted(ids)]
    return [d for d in found if lifecycle.is_usable(d)]
