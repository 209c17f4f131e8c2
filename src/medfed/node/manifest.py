"""A dataset's content manifest: an RFC 9162 hash-tree root over its schema and rows.

How it runs: leaf 0 is the canonical JSON (``medfed.ledger.entries.canonical``) of the
column schema, then one leaf per row, in file order, holding the canonical JSON list of
the row's values (missing values as ``null``, dates as ISO text). The leaves go into
``medfed.ledger.merkle.MemoryTree`` (leaf = SHA-256(0x00 ‖ bytes), node = SHA-256(0x01 ‖
left ‖ right)) and the root, in hex, is sent to the hub with the dataset's registration.
The hub keeps it on the dataset version, so anyone holding the node's file can recompute
the root (:func:`file_manifest_root`) and check that the version has not changed; one
changed value, added, removed or reordered row changes the root.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from medfed.ledger.entries import canonical
from medfed.ledger.merkle import MemoryTree
from medfed.node.stores.tables import TableStore

__all__ = ["file_manifest_root", "manifest_leaves", "manifest_root"]


def _value(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()  # numpy scalars to Python
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    return value


def manifest_leaves(store: TableStore) -> Iterator[bytes]:
    """The entries hashed into the tree: the schema, then each row."""
    columns = store.columns
    yield canonical({"columns": [c.model_dump(mode="json") for c in columns]})
    frame = store.all_rows()[[c.name for c in columns]]  # opted-out rows too: the file
    for row in frame.itertuples(index=False, name=None):
        yield canonical([_value(v) for v in row])


def manifest_root(store: TableStore) -> str:
    """The hex root of the dataset's hash tree."""
    tree = MemoryTree()
    for entry in manifest_leaves(store):
        tree.append(entry)
    return tree.root().hex()


def file_manifest_root(path: str | Path) -> str:
    """Recompute the root from a node's table file (what a verifier does)."""
    store = TableStore.open(path)
    try:
        return manifest_root(store)
    finally:
        store.close()
