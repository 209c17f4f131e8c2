"""Dataset drift: a node's file compared with the version it registered at the hub.

How it runs: ``<data_dir>/datasets.json`` keeps, per dataset name, the column schema and
content manifest root (``medfed.node.manifest``) of the version the node last registered,
with the hub's id and version number for it. On every start the agent reads each file
again and asks :meth:`DriftRecord.check`:

* ``new`` — never registered from this data folder: register it;
* ``same`` — schema and manifest unchanged: re-announce it (the hub changes nothing);
* ``content`` — the same schema, other rows or values: register it; the hub makes the next
  version (a released version is never edited: ``medfed.hub.services.datasets``);
* ``schema`` — columns added, removed, renamed, reordered or of another type (a stray
  text value makes a number column ``string``; a short row makes blanks, turning integers
  into floats): refused. The node neither registers nor serves the dataset and logs which
  columns changed (names and types, never a value) until the steward accepts the new
  schema with ``medfed node datasets new-version NAME`` (:meth:`DriftRecord.accept`); the
  next start registers it as the next version.

Writes are atomic (a temporary file renamed over the record), mode 0600.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medfed.common.errors import BadRequest
from medfed.common.schemas import ColumnSchema
from medfed.common.timeutil import utcnow

__all__ = ["DriftRecord", "Verdict", "schema_changes"]

Kind = Literal["new", "same", "content", "schema"]


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    #: for ``schema``: what changed, by column name and type (no data values)
    changes: tuple[str, ...] = ()
    #: the hub's version number the node last registered (None: not known here)
    version: int | None = None

    def message(self, name: str) -> str:
        """The steward's line for a refused schema change."""
        held = f"version {self.version}" if self.version is not None else "the registered version"
        return (
            f"dataset '{name}': the file's schema differs from {held} "
            f"({'; '.join(self.changes)}); this node neither serves nor registers it until "
            f"the steward registers a new version: medfed node datasets new-version {name} "
            f"--config <node.toml> (or restores the file)"
        )


def schema_changes(old: list[ColumnSchema], new: list[ColumnSchema]) -> list[str]:
    """What differs between two column schemas, one phrase per change ([] if equal)."""
    before = {c.name: c.type.value for c in old}
    after = {c.name: c.type.value for c in new}
    changes = [f"column '{n}' removed" for n in before if n not in after]
    changes += [f"column '{n}' added ({t})" for n, t in after.items() if n not in before]
    changes += [
        f"column '{n}' is {after[n]}, was {t}"
        for n, t in before.items()
        if n in after and after[n] != t
    ]
    if not changes and [c.name for c in old] != [c.name for c in new]:
        changes.append("columns reordered")
    return changes


class DriftRecord:
    """What the node registered, per dataset name (``<data_dir>/datasets.json``)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "datasets.json"

    def _load(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise BadRequest(f"cannot read the node's dataset record {self.path}: {exc}") from None
        if not isinstance(data, dict):
            raise BadRequest(f"the node's dataset record {self.path} must be a JSON object")
        return data

    def _save(self, data: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)

    def entry(self, name: str) -> dict[str, Any] | None:
        return self._load().get(name)

    def check(self, name: str, columns: list[ColumnSchema], manifest_root: str) -> Verdict:
        """Compare a file's schema and manifest with the version registered from here."""
        entry = self._load().get(name)
        if entry is None:
            return Verdict("new")
        old = [ColumnSchema.model_validate(c) for c in entry.get("columns", [])]
        version = entry.get("version")
        changes = schema_changes(old, columns)
        if changes:
            return Verdict("schema", tuple(changes), version)
        if entry.get("manifest_root") != manifest_root:
            return Verdict("content", (), version)
        return Verdict("same", (), version)

    def registered(
        self,
        name: str,
        *,
        columns: list[ColumnSchema],
        manifest_root: str,
        dataset_id: int,
        version: int,
    ) -> None:
        """The hub accepted a registration: this is now the version to compare with."""
        data = self._load()
        data[name] = {
            "columns": [c.model_dump(mode="json") for c in columns],
            "manifest_root": manifest_root,
            "dataset_id": dataset_id,
            "version": version,
            "registered_at": utcnow().isoformat(),
        }
        self._save(data)

    def accept(self, name: str, columns: list[ColumnSchema]) -> dict[str, Any]:
        """The steward accepts a new schema: the next start registers the next version."""
        data = self._load()
        entry = dict(data.get(name) or {})
        entry.update(
            columns=[c.model_dump(mode="json") for c in columns],
            manifest_root=None,  # differs from any file: the next start registers it
            accepted_at=utcnow().isoformat(),
        )
        data[name] = entry
        self._save(data)
        return entry
