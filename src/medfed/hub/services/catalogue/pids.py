"""Persistent ids of dataset versions, resolved at ``/pid/{id}``.

A version gets the hub pid ``mfd.<version id>`` when it is released; a Zenodo DOI, once
reserved and published (``zenodo.py``), replaces it as the version's ``pid``. Both keep
resolving: the DOI by lookup, ``mfd.<id>`` by its id. A pid is never reused and never
disappears: an invalidated version answers with a tombstone (its name, version, the
label and the reason) instead of its metadata. Drafts have no pid and do not resolve.
A pid resolves only for those who may see its version (``lifecycle.can_see``: anyone for
published versions and their tombstones; authors and entitled projects for released
ones); for everyone else it answers exactly like an unknown pid (no existence oracle).
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.common.catalogue_resources import PidRecord
from medfed.common.errors import NotFound
from medfed.hub.db.models import Dataset, User
from medfed.hub.services.catalogue.lifecycle import can_see

__all__ = ["HUB_PID", "hub_pid", "label_of", "pid_record", "resolve_pid"]

HUB_PID = re.compile(r"^mfd\.(\d{1,18})$")


def hub_pid(dataset: Dataset) -> str:
    return f"mfd.{dataset.id}"


def label_of(dataset: Dataset) -> str:
    """The label shown with a version, e.g. ``INVALIDATED: consent withdrawn``."""
    if dataset.state == "invalidated":
        return f"INVALIDATED: {dataset.invalidation_reason or 'no reason given'}"
    if dataset.next_id is not None:
        return f"{dataset.state.upper()} (a newer version exists)"
    return dataset.state.upper()


def resolve_pid(session: Session, pid: str, *, user: User | None) -> Dataset:
    """The version a pid names (a DOI or ``mfd.<id>``) if ``user`` may see it.

    NotFound, with one message, for unknown pids, drafts and versions hidden from ``user``.
    """
    dataset = session.scalar(select(Dataset).where(Dataset.pid == pid))
    if dataset is None:
        match = HUB_PID.match(pid)
        if match is not None:
            dataset = session.get(Dataset, int(match.group(1)))
    if (
        dataset is None
        or dataset.state == "draft"
        or dataset.pid is None
        or not can_see(session, user, dataset)
    ):
        raise NotFound(f"persistent id '{pid}' not found")
    return dataset


def pid_record(dataset: Dataset, *, pid: str, url: str) -> PidRecord:
    tombstone = dataset.state == "invalidated"
    return PidRecord(
        pid=pid,
        dataset_id=dataset.id,
        name=dataset.name,
        version=dataset.version,
        state=dataset.state,
        label=label_of(dataset),
        url=url,
        tombstone=tombstone,
        invalidation_reason=dataset.invalidation_reason if tombstone else None,
        invalidated_at=dataset.invalidated_at if tombstone else None,
    )
