"""Datasets, registered by the node that holds them, and how task requests name them.

Each dataset version is its own row (ids used by tasks, runs and entitlements are version
ids). A node registers a dataset with its name, description, column schema, a row count
already rounded by the node, its catalogue summary and its content manifest root
(``medfed.node.manifest``):

* the first registration of a name creates version 1 as a draft;
* while the newest version is a draft, a changed registration updates it in place;
* once it is released (frozen), a registration with other content (manifest root, columns
  or row count) creates the next version — a draft linked both ways with
  ``previous_id``/``next_id`` that starts from the previous version's catalogue metadata —
  and the old version stays as it was; the same content changes nothing.

The node's description is a default: once the dataset's authors have written one
(``Dataset.described``, set by ``catalogue.metadata.update_metadata``), a registration no
longer replaces it, and a new version starts from theirs.

Researchers name datasets by id (one exact version), by name (one version per node that
has it: the newest usable one, else the newest) or as ``node/name``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.common.errors import NotFound
from medfed.common.resources import DatasetRegister
from medfed.common.schemas import ColumnSchema, DatasetSchema
from medfed.common.timeutil import utcnow
from medfed.hub.db.models import Dataset, Node
from medfed.hub.services.catalogue.lifecycle import State, is_usable
from medfed.hub.services.ledger import actor_of, record
from medfed.ledger.entries import content_hash

# catalogue metadata a new version starts from (its authors may change it while a draft)
CARRIED = (
    "title",
    "keywords",
    "themes",
    "access_rights",
    "access_conditions",
    "duo_codes",
    "unique_individuals",
    "records",
    "contact",
    "license",
    "described",
)


def newest_version(session: Session, *, node_id: int, name: str) -> Dataset | None:
    return session.scalar(
        select(Dataset)
        .where(Dataset.node_id == node_id, Dataset.name == name)
        .order_by(Dataset.version.desc())
        .limit(1)
    )


def register(session: Session, *, node: Node, data: DatasetRegister) -> Dataset:
    current = newest_version(session, node_id=node.id, name=data.name)
    columns = [c.model_dump(mode="json") for c in data.columns]
    content = (data.manifest_root, columns, data.row_count)
    if current is None:
        dataset = Dataset(node_id=node.id, name=data.name, version=1, state=State.draft.value)
        session.add(dataset)
        action = "dataset.register"
    elif current.state == State.draft.value:
        if (current.manifest_root, current.columns, current.row_count) == content and (
            (current.described or current.description == data.description)
            and current.summary == data.summary
        ):
            return current  # a node re-announcing an unchanged dataset changes nothing
        dataset, action = current, "dataset.update"
    elif (current.manifest_root, current.columns, current.row_count) == content:
        return current  # the same content: the frozen version stays as it is
    else:
        dataset = Dataset(
            node_id=node.id,
            name=data.name,
            version=current.version + 1,
            state=State.draft.value,
            previous_id=current.id,
            **{key: getattr(current, key) for key in CARRIED},
        )
        if current.described:
            dataset.description = current.description
        session.add(dataset)
        action = "dataset.version"
    if not dataset.described:
        dataset.description = data.description
    dataset.columns = columns
    dataset.row_count = data.row_count
    dataset.summary = data.summary
    dataset.manifest_root = data.manifest_root
    dataset.updated_at = utcnow()
    session.flush()
    objects: dict[str, int] = {"dataset": dataset.id, "node": node.id, "version": dataset.version}
    if current is not None and dataset is not current:
        current.next_id = dataset.id
        objects["previous"] = current.id
        session.flush()
    hashes = {
        "schema": content_hash(columns),
        "description": content_hash(data.description),
        "summary": content_hash(data.summary),
    }
    if data.manifest_root is not None:
        hashes["manifest"] = data.manifest_root
    record(session, action=action, actor=actor_of(node), objects=objects, hashes=hashes)
    return dataset


def list_datasets(session: Session, *, node_id: int | None = None) -> list[Dataset]:
    query = select(Dataset).order_by(Dataset.id)
    if node_id is not None:
        query = query.where(Dataset.node_id == node_id)
    return list(session.scalars(query))


def get_dataset(session: Session, dataset_id: int) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"dataset {dataset_id} not found")
    return dataset


def _pick(matches: Sequence[Dataset]) -> list[Dataset]:
    """Per (node, name): the newest usable version, else the newest one (refused later)."""
    chosen: dict[tuple[int, str], Dataset] = {}
    for dataset in sorted(matches, key=lambda d: d.version, reverse=True):
        key = (dataset.node_id, dataset.name)
        held = chosen.get(key)
        if held is None or (not is_usable(held) and is_usable(dataset)):
            chosen[key] = dataset
    return sorted(chosen.values(), key=lambda d: (d.node_id, d.name))


def resolve(session: Session, refs: Sequence[int | str]) -> list[Dataset]:
    """Datasets named by ``refs`` (ids, names, or ``node/name``), in order, without repeats."""
    found: dict[int, Dataset] = {}
    for ref in refs:
        matches: list[Dataset]
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            matches = [get_dataset(session, int(ref))]
        elif "/" in ref:
            node_name, _, name = ref.partition("/")
            matches = _pick(
                list(
                    session.scalars(
                        select(Dataset)
                        .join(Node, Node.id == Dataset.node_id)
                        .where(Node.name == node_name, Dataset.name == name)
                    )
                )
            )
        else:
            matches = _pick(list(session.scalars(select(Dataset).where(Dataset.name == ref))))
        if not matches:
            raise NotFound(f"dataset '{ref}' not found")
        for dataset in matches:
            found.setdefault(dataset.id, dataset)
    return list(found.values())


def schema_of(dataset: Dataset) -> DatasetSchema:
    return DatasetSchema(
        dataset_id=dataset.id,
        node_id=dataset.node_id,
        name=dataset.name,
        columns=[ColumnSchema.model_validate(c) for c in dataset.columns],
    )
