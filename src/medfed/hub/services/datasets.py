"""Datasets, registered by the node that holds them, and how task requests name them.

A node registers (or updates) a dataset with its name, description, column schema and a
row count already rounded by the node. Researchers name datasets by id, by name (every
dataset of that name, one per node) or as ``node/name``.
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
from medfed.hub.services.ledger import actor_of, record
from medfed.ledger.entries import content_hash


def register(session: Session, *, node: Node, data: DatasetRegister) -> Dataset:
    dataset = session.scalar(
        select(Dataset).where(Dataset.node_id == node.id, Dataset.name == data.name)
    )
    columns = [c.model_dump(mode="json") for c in data.columns]
    action = "dataset.update"
    if dataset is None:
        dataset = Dataset(node_id=node.id, name=data.name)
        session.add(dataset)
        action = "dataset.register"
    elif (
        dataset.columns == columns
        and dataset.description == data.description
        and dataset.row_count == data.row_count
        and dataset.summary == data.summary
    ):
        return dataset  # a node re-announcing an unchanged dataset changes nothing
    dataset.description = data.description
    dataset.columns = columns
    dataset.row_count = data.row_count
    dataset.summary = data.summary
    dataset.updated_at = utcnow()
    session.flush()
    record(
        session,
        action=action,
        actor=actor_of(node),
        objects={"dataset": dataset.id, "node": node.id},
        hashes={
            "schema": content_hash(columns),
            "description": content_hash(data.description),
            "summary": content_hash(data.summary),
        },
    )
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


def resolve(session: Session, refs: Sequence[int | str]) -> list[Dataset]:
    """Datasets named by ``refs`` (ids, names, or ``node/name``), in order, without repeats."""
    found: dict[int, Dataset] = {}
    for ref in refs:
        matches: list[Dataset]
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            matches = [get_dataset(session, int(ref))]
        elif "/" in ref:
            node_name, _, name = ref.partition("/")
            matches = list(
                session.scalars(
                    select(Dataset)
                    .join(Node, Node.id == Dataset.node_id)
                    .where(Node.name == node_name, Dataset.name == name)
                )
            )
        else:
            matches = list(
                session.scalars(select(Dataset).where(Dataset.name == ref).order_by(Dataset.id))
            )
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
