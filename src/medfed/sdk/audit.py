"""Auditing from the outside: fetch the hub's log and check everything locally.

:class:`Ledger` is the SDK resource (``client.ledger``). :func:`verify` fetches every
entry and checkpoint and recomputes the tree from scratch (``medfed.ledger.verify``);
:func:`trail` lists every entry that names a dataset, each with its inclusion proof
checked against the latest signed checkpoint; :func:`compare` matches a node's own run
log with the hub's ``run.finish`` entries by the SHA-256 of what left the node.
:meth:`Ledger.queries` is the stewards' view of the queries made on their data.
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfed.common.audit_resources import QueryAuditEntry
from medfed.common.errors import NotFound
from medfed.common.resources import (
    ConsistencyProof,
    InclusionProof,
    LedgerCheckpointPublic,
    LedgerEntryPublic,
    LedgerKeys,
)
from medfed.ledger.checkpoint import Checkpoint, verify_signature
from medfed.ledger.merkle import leaf_hash, verify_inclusion
from medfed.ledger.verify import Report, find_forks, verify_log
from medfed.sdk.http import HubHTTP

PAGE = 1000


class Ledger:
    def __init__(self, http: HubHTTP) -> None:
        self._http = http

    def keys(self) -> LedgerKeys:
        return LedgerKeys.model_validate(self._http.request("GET", "/api/ledger/keys"))

    def checkpoint(self) -> LedgerCheckpointPublic:
        data = self._http.request("GET", "/api/ledger/checkpoint")
        return LedgerCheckpointPublic.model_validate(data)

    def checkpoints(self, since: int = 0) -> list[LedgerCheckpointPublic]:
        out: list[LedgerCheckpointPublic] = []
        while True:
            data = self._http.request("GET", "/api/ledger/checkpoints", params={"since": since})
            page = [LedgerCheckpointPublic.model_validate(c) for c in data]
            out.extend(page)
            if len(page) < PAGE:
                return out
            since = page[-1].size + 1

    def entries(self, start: int = 0, end: int | None = None) -> builtins.list[LedgerEntryPublic]:
        out: list[LedgerEntryPublic] = []
        while end is None or start < end:
            stop = start + PAGE if end is None else min(end, start + PAGE)
            data = self._http.request(
                "GET", "/api/ledger/entries", params={"start": start, "end": stop}
            )
            page = [LedgerEntryPublic.model_validate(e) for e in data]
            out.extend(page)
            if len(page) < stop - start:
                break
            start = stop
        return out

    def inclusion(self, index: int, size: int) -> InclusionProof:
        data = self._http.request(
            "GET", "/api/ledger/proof/inclusion", params={"index": index, "size": size}
        )
        return InclusionProof.model_validate(data)

    def consistency(self, first: int, second: int) -> ConsistencyProof:
        data = self._http.request(
            "GET", "/api/ledger/proof/consistency", params={"first": first, "second": second}
        )
        return ConsistencyProof.model_validate(data)

    def queries(
        self, project: int | None = None, *, flagged: bool = False, limit: int = 1000
    ) -> builtins.list[QueryAuditEntry]:
        """Stewards: the queries on their organization's data, newest first."""
        params: dict[str, Any] = {"flagged": flagged, "limit": limit}
        if project is not None:
            params["project_id"] = project
        data = self._http.request("GET", "/api/audit/queries", params=params)
        return [QueryAuditEntry.model_validate(e) for e in data]


def as_checkpoint(public: LedgerCheckpointPublic) -> Checkpoint:
    return Checkpoint(
        public.origin, public.size, public.root, public.time, public.signature, public.cosignatures
    )


def verify(ledger: Ledger) -> Report:
    """Fetch every checkpoint, then every entry, and recompute everything from scratch."""
    keys = ledger.keys()
    checkpoints = [as_checkpoint(c) for c in ledger.checkpoints()]
    bodies = [e.body.encode() for e in ledger.entries()]
    report = verify_log(bodies, checkpoints, keys.hub_key, keys.witnesses)
    report.problems.extend(find_forks(checkpoints))
    return report


@dataclass(frozen=True)
class TrailItem:
    index: int
    action: str
    actor: str
    time: str
    objects: dict[str, Any]
    proven: bool


def _names(entry: dict[str, Any], dataset_id: int) -> bool:
    objects = entry.get("objects", {})
    return objects.get("dataset") == dataset_id or dataset_id in (objects.get("datasets") or [])


def trail(ledger: Ledger, dataset_id: int) -> list[TrailItem]:
    """Every use of a dataset, each proven included in the latest signed checkpoint."""
    keys = ledger.keys()
    try:
        head = as_checkpoint(ledger.checkpoint())
    except NotFound:
        return []
    if not verify_signature(keys.hub_key, head, head.signature):
        raise ValueError("the hub's latest checkpoint signature does not verify")
    root = bytes.fromhex(head.root)
    items: list[TrailItem] = []
    for public in ledger.entries(0, head.size):
        entry = json.loads(public.body)
        if not _names(entry, dataset_id):
            continue
        proof = ledger.inclusion(public.index, head.size)
        proven = verify_inclusion(
            leaf_hash(public.body.encode()),
            public.index,
            head.size,
            [bytes.fromhex(h) for h in proof.proof],
            root,
        )
        items.append(
            TrailItem(
                public.index,
                entry["action"],
                entry["actor"],
                entry["time"],
                entry["objects"],
                proven,
            )
        )
    return items


@dataclass
class Comparison:
    matched: list[int] = field(default_factory=list)
    differ: list[int] = field(default_factory=list)
    missing_at_hub: list[int] = field(default_factory=list)
    missing_at_node: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.differ or self.missing_at_hub or self.missing_at_node)


def compare(ledger: Ledger, node_log: Path, node_id: int) -> Comparison:
    """Match the node's log (``runs.jsonl``) with the hub's ``run.finish`` entries."""
    sent: dict[int, str] = {}
    for line in node_log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("accepted") and "run_id" in entry:
            sent[entry["run_id"]] = entry["sent_sha256"]
    hub: dict[int, str] = {}
    for public in ledger.entries():
        entry = json.loads(public.body)
        if entry["action"] == "run.finish" and entry["actor"] == f"node:{node_id}":
            hub[entry["objects"]["run"]] = entry["hashes"]["outcome"]
    result = Comparison()
    for run_id, digest in sorted(sent.items()):
        if run_id not in hub:
            result.missing_at_hub.append(run_id)
        elif hub[run_id] == digest:
            result.matched.append(run_id)
        else:
            result.differ.append(run_id)
    result.missing_at_node = sorted(set(hub) - set(sent))
    return result
