"""Row-set memory: the subset and differencing rules, over every row set a node released.

How it runs:

* Each dataset version (its content hash) has a :class:`RowSetMemory`: one small integer
  per row, the id of the *cell* the row belongs to, kept in
  ``<data_dir>/rowsets/<sha256>.npy``. Rows share a cell when every row set the node has
  released anything about (any algorithm, project or researcher, training included)
  contains both or neither of them. At first every row is in one cell: the whole dataset
  always counts as released.
* During a run, :class:`RecordingData` stands between the local step and the table. Each
  ``select(columns, where)`` records the rows that ``where`` selects and, per column, the
  selected rows where it is not null (a complete-case analysis uses an intersection of
  those, which the partition then already holds); each ``count(where)`` records its rows;
  a grid algorithm records its cells through :meth:`RecordingData.cells`.
* After the output rules passed, :meth:`RowSetMemory.release` refines the partition by
  everything recorded. If any cell would be split into a part of 1..k-1 rows, the run is
  withheld and nothing changes; otherwise the new partition is written (atomically, only
  when it changed) before the output leaves.

Why one rule is enough: a released set that differs from an earlier one (or from the
whole dataset, or from a union or difference of several, across projects and researchers)
by 1..k-1 rows necessarily splits some cell into such a part, so complements, pairwise
differencing, trackers and colluding projects are all refused. A set that equals one
already released changes nothing and is answered like any other. The check is linear in
the rows: a cell id times two plus the new mask, a ``bincount``, a remap.

Opt-out (:mod:`medfed.node.stores.optout`): rows of opted-out persons are in no mask, so
"the same filter before and after an opt-out change" gives two row sets that differ by the
persons whose opt-out changed — a split of a released cell into a small part, refused like
any differencing. Rows already hidden when the memory is first created start in a cell of
their own (never released); a cell under ``k`` rows is tolerated only while no run uses any
of its rows, so a person who withdraws an opt-out cannot be told apart by their return.

The memory never leaves the node. The fingerprints in the run log are keyed with the
node's secret, so the hub cannot test a guessed row set against them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from medfed.common.filters import Filter
from medfed.common.schemas import ColumnSchema
from medfed.node.gate.dominance import Magnitude, magnitude
from medfed.node.stores.tables import TableStore

__all__ = ["Decision", "RecordingData", "RowSetMemory"]

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Decision:
    """What the row-set rules decided for one run."""

    released: bool
    #: "subset" (the first split of a dataset), "differencing" (a split of an earlier
    #: released set), or None when released
    rule: str | None
    cells_before: int
    cells_after: int


def _compact(key: IntArray) -> tuple[IntArray, IntArray]:
    """Renumber ``key`` to 0..m-1; returns the new ids and each id's size."""
    if len(key) == 0:
        return key, np.zeros(0, dtype=np.int64)
    top = int(key.max())
    if top < 4 * len(key):
        counts = np.bincount(key)
        present = counts > 0
        remap = np.cumsum(present, dtype=np.int64) - 1
        return remap[key], counts[present].astype(np.int64)
    codes, _ = pd.factorize(key)
    ids = np.asarray(codes, dtype=np.int64)
    return ids, np.bincount(ids).astype(np.int64)


class RowSetMemory:
    """One dataset version's partition of its rows into released cells (durable)."""

    def __init__(
        self,
        directory: Path,
        dataset_sha256: str,
        n_rows: int,
        *,
        hidden: npt.NDArray[np.bool_] | None = None,
    ) -> None:
        if not dataset_sha256.isalnum():
            raise ValueError("row-set memory: the dataset hash must be hexadecimal")
        self.path = directory / f"{dataset_sha256}.npy"
        self.n_rows = n_rows
        self._lock = threading.Lock()
        self._cells = self._load(hidden)
        self._n_cells = int(self._cells.max()) + 1 if n_rows else 0

    def _load(self, hidden: npt.NDArray[np.bool_] | None) -> IntArray:
        if not self.path.exists():
            if hidden is None or not hidden.any() or hidden.all():
                return np.zeros(self.n_rows, dtype=np.int64)
            return _compact(np.asarray(hidden, dtype=np.int64))[0]  # hidden: never released
        cells = np.load(self.path, allow_pickle=False)
        if cells.shape != (self.n_rows,):
            raise ValueError(
                f"row-set memory {self.path.name} holds {cells.shape[0]} rows, "
                f"the dataset {self.n_rows}; it belongs to another version"
            )
        return np.asarray(cells, dtype=np.int64)

    @property
    def n_cells(self) -> int:
        """How many cells the released row sets cut the dataset into."""
        return self._n_cells

    def refine(self, labelings: Sequence[IntArray]) -> tuple[IntArray, IntArray]:
        """The partition refined by ``labelings`` (one label per row), and cell sizes."""
        key = self._cells
        sizes = np.bincount(key).astype(np.int64) if len(key) else key
        for labels in labelings:
            if labels.shape != (self.n_rows,):
                raise ValueError("row-set memory: a labelling has the wrong length")
            low, high = (int(labels.min()), int(labels.max())) if len(labels) else (0, 0)
            if low >= 0 and high <= 1:
                key, sizes = _compact(key * 2 + labels)
            else:
                shifted = labels - low
                key, sizes = _compact(key * (high - low + 1) + shifted)
        return key, sizes

    def release(self, labelings: Sequence[IntArray], k: int) -> Decision:
        """Refuse a split into a part under ``k``; otherwise remember the new partition."""
        with self._lock:
            before = self._n_cells
            cells, sizes = self.refine(labelings)
            after = len(sizes)
            if self.n_rows and self._violates(cells, sizes, labelings, k):
                rule = "subset" if before == 1 else "differencing"
                return Decision(False, rule, before, before)
            if after != before:
                self._save(cells)
                self._cells, self._n_cells = cells, after
            return Decision(True, None, before, after)

    def _violates(
        self, cells: IntArray, sizes: IntArray, labelings: Sequence[IntArray], k: int
    ) -> bool:
        """A part of 1..k-1 rows split off a cell, or a row of a small cell used."""
        old_sizes = np.bincount(self._cells).astype(np.int64)
        parent = np.zeros(len(sizes), dtype=np.int64)
        parent[cells] = self._cells  # every new cell lies inside one old cell
        if bool(((sizes < k) & (sizes < old_sizes[parent])).any()):
            return True
        small = old_sizes[self._cells] < k
        if not small.any():
            return False
        for labels in labelings:
            binary = int(labels.min(initial=0)) >= 0 and int(labels.max(initial=0)) <= 1
            used = labels == 1 if binary else labels >= 0
            if bool((used & small).any()):
                return True
        return False

    def _save(self, cells: IntArray) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        smallest = np.int32 if len(cells) < 2**31 else np.int64
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, cells.astype(smallest), allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class RecordingData:
    """The table as a local step sees it, recording every row set the step touches."""

    def __init__(self, store: TableStore, *, key: bytes) -> None:
        self._store = store
        self._n = store.row_count
        self._key = key
        self._seen: set[bytes] = set()
        self.labelings: list[IntArray] = []
        #: keyed fingerprints of the recorded row sets, for the node's run log
        self.fingerprints: list[str] = []
        #: per declared sum or mean, its total and two largest contributions (dominance)
        self.magnitudes_seen: dict[str, Magnitude] = {}

    @property
    def columns(self) -> list[ColumnSchema]:
        return self._store.columns

    def _mask(self, ids: npt.NDArray[Any]) -> IntArray:
        mask = np.zeros(self._n, dtype=np.int64)
        mask[np.asarray(ids, dtype=np.int64)] = 1
        return mask

    def _record(self, labels: IntArray) -> None:
        is_mask = labels.min(initial=0) >= 0 and labels.max(initial=0) <= 1
        packed = np.packbits(labels.astype(bool)) if is_mask else labels
        digest = hmac.new(self._key, packed.tobytes(), hashlib.sha256).digest()
        if digest in self._seen:
            return
        self._seen.add(digest)
        self.labelings.append(labels)
        self.fingerprints.append(digest.hex()[:32])

    def select(self, columns: Sequence[str], where: Filter | None = None) -> pd.DataFrame:
        frame = self._store.select(columns, where)
        ids = frame.index.to_numpy()
        self._record(self._mask(ids))
        for column in frame.columns:
            present = frame[column].notna().to_numpy()
            if not present.all():
                self._record(self._mask(ids[present]))
        return frame

    def count(self, where: Filter | None = None) -> int:
        ids = self._store.row_ids(where)
        self._record(self._mask(ids))
        return len(ids)

    def magnitudes(self, label: str, values: Sequence[float] | npt.NDArray[Any]) -> None:
        """Record what the dominance rules need about a released sum (never the values)."""
        name, i = label, 1
        while name in self.magnitudes_seen:
            i += 1
            name = f"{label}#{i}"
        self.magnitudes_seen[name] = magnitude(values)

    def cells(self, labels: pd.Series) -> None:
        """Record a grid: ``labels`` indexed by row id, one cell label per row used."""
        codes, _ = pd.factorize(labels.to_numpy(), use_na_sentinel=True)
        full = np.full(self._n, -1, dtype=np.int64)
        full[labels.index.to_numpy(dtype=np.int64)] = np.asarray(codes, dtype=np.int64)
        self._record(full)
