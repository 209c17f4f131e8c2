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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from medfed.common.errors import Refused
from medfed.common.filters import Filter
from medfed.common.schemas import ColumnSchema
from medfed.common.sqlvalues import missing_sql
from medfed.node.gate.dominance import Magnitude, magnitude

if TYPE_CHECKING:  # the hub imports the gate's rules without the node's DuckDB
    from medfed.node.stores.tables import TableStore

__all__ = ["CellGrid", "Decision", "RecordingData", "RowSetMemory"]

IntArray = npt.NDArray[np.int64]
#: a labelling of the rows: a bool (or 0/1) mask, or one integer label per row (-1: unused)
Labels = npt.NDArray[Any]
#: cell ids fit an int32 (half the memory) below this many rows: twice the largest id
#: plus one (a refinement by a mask) must stay under 2**31
_SMALL_ROWS = 2**30


def _id_type(n_rows: int) -> type[np.signedinteger[Any]]:
    return np.int32 if n_rows < _SMALL_ROWS else np.int64


@dataclass(frozen=True)
class Decision:
    """What the row-set rules decided for one run."""

    released: bool
    #: "subset" (the first split of a dataset), "differencing" (a split of an earlier
    #: released set), or None when released
    rule: str | None
    cells_before: int
    cells_after: int


def _bincount(key: Labels, chunk: int = 1 << 22) -> IntArray:
    """``np.bincount(key)`` in slices: numpy widens its input to int64, so a whole int32
    partition would cost eight bytes a row for the count alone."""
    if len(key) == 0:
        return np.zeros(0, dtype=np.int64)
    size = int(key.max()) + 1
    counts = np.zeros(size, dtype=np.int64)
    for start in range(0, len(key), chunk):
        counts += np.bincount(key[start : start + chunk], minlength=size)
    return counts


def _compact(key: Labels) -> tuple[Labels, IntArray]:
    """Renumber ``key`` to 0..m-1 (as int32 when the rows allow); the ids and their sizes."""
    kind = _id_type(len(key))
    if len(key) == 0:
        return key.astype(kind), np.zeros(0, dtype=np.int64)
    top = int(key.max())
    if top < 4 * len(key):
        counts = _bincount(key)
        present = counts > 0
        remap = (np.cumsum(present, dtype=np.int64) - 1).astype(kind)
        return remap[key], counts[present].astype(np.int64)
    codes, _ = pd.factorize(key)
    ids = np.asarray(codes, dtype=kind)
    return ids, _bincount(ids)


def _split(key: Labels, labels: Labels, chunk: int = 1 << 22) -> tuple[Labels, IntArray]:
    """The cells of ``key`` split by a grid's ``labels``, renumbered: :func:`_compact` of
    ``key * width + (labels - low)``, computed in slices when the combined ids are few
    (no row-sized int64 array: 400 MB less at 50,000,000 rows)."""
    low, high = int(labels.min()), int(labels.max())
    width = high - low + 1
    top = (int(key.max(initial=0)) + 1) * width
    if top >= 4 * len(key):
        return _compact(key.astype(np.int64) * width + (labels.astype(np.int64) - low))

    def combined(start: int) -> IntArray:
        part = key[start : start + chunk].astype(np.int64)
        part *= width
        part += labels[start : start + chunk]
        part -= low
        return part

    counts = np.zeros(top, dtype=np.int64)
    for start in range(0, len(key), chunk):
        counts += np.bincount(combined(start), minlength=top)
    present = counts > 0
    kind = _id_type(len(key))
    remap = (np.cumsum(present, dtype=np.int64) - 1).astype(kind)
    out = np.empty(len(key), dtype=kind)
    for start in range(0, len(key), chunk):
        out[start : start + chunk] = remap[combined(start)]
    return out, counts[present]


def _is_mask(labels: Labels) -> bool:
    """A bool mask, or integer labels that are all 0 or 1 (a row set, not a grid)."""
    if labels.dtype == np.bool_:
        return True
    return int(labels.min(initial=0)) >= 0 and int(labels.max(initial=0)) <= 1


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

    def _load(self, hidden: npt.NDArray[np.bool_] | None) -> Labels:
        kind = _id_type(self.n_rows)
        if not self.path.exists():
            if hidden is None or not hidden.any() or hidden.all():
                return np.zeros(self.n_rows, dtype=kind)
            return _compact(np.asarray(hidden, dtype=kind))[0]  # hidden: never released
        cells = np.load(self.path, allow_pickle=False)
        if cells.shape != (self.n_rows,):
            raise ValueError(
                f"row-set memory {self.path.name} holds {cells.shape[0]} rows, "
                f"the dataset {self.n_rows}; it belongs to another version"
            )
        return np.asarray(cells, dtype=kind)

    @property
    def n_cells(self) -> int:
        """How many cells the released row sets cut the dataset into."""
        return self._n_cells

    def refine(self, labelings: Sequence[Labels]) -> tuple[Labels, IntArray]:
        """The partition refined by ``labelings`` (one label per row), and cell sizes.

        A mask that holds every row or none cuts no cell: it is skipped (the partition is
        kept compact, so refining by it would renumber nothing).
        """
        key = self._cells
        sizes = _bincount(key)
        for labels in labelings:
            if labels.shape != (self.n_rows,):
                raise ValueError("row-set memory: a labelling has the wrong length")
            if _is_mask(labels):
                if labels.all() or not labels.any():
                    continue
                doubled = key * 2
                doubled += labels  # in place: one partition-sized array, not three
                key, sizes = _compact(doubled)
            else:
                key, sizes = _split(key, labels)
        return key, sizes

    def release(self, labelings: Sequence[Labels], k: int) -> Decision:
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
        self, cells: Labels, sizes: IntArray, labelings: Sequence[Labels], k: int
    ) -> bool:
        """A part of 1..k-1 rows split off a cell, or a row of a small cell used."""
        old_sizes = _bincount(self._cells)
        parent = np.zeros(len(sizes), dtype=np.int64)
        parent[cells] = self._cells  # every new cell lies inside one old cell
        if bool(((sizes < k) & (sizes < old_sizes[parent])).any()):
            return True
        small_cell = old_sizes < k
        if not small_cell.any():
            return False
        small = small_cell[self._cells]
        for labels in labelings:
            used = labels == 1 if _is_mask(labels) else labels >= 0
            if bool((used & small).any()):
                return True
        return False

    def _save(self, cells: Labels) -> None:
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


def _digest(key: bytes, labels: Labels, chunk: int = 1 << 22) -> bytes:
    """The keyed fingerprint of a labelling: of its packed bits for a mask, else of its
    labels as int64 (the same bytes whatever the array's dtype), hashed in chunks."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    if _is_mask(labels):
        mac.update(np.packbits(labels.astype(bool, copy=False)).tobytes())
    else:
        for start in range(0, len(labels), chunk):
            mac.update(labels[start : start + chunk].astype(np.int64).tobytes())
    return mac.digest()


class RecordingData:
    """The table as a local step sees it, recording every row set the step touches."""

    def __init__(self, store: TableStore, *, key: bytes) -> None:
        self._store = store
        self._n = store.row_count
        self._key = key
        self._seen: set[bytes] = set()
        self.labelings: list[Labels] = []
        #: keyed fingerprints of the recorded row sets, for the node's run log
        self.fingerprints: list[str] = []
        #: per declared sum or mean, its total and two largest contributions (dominance)
        self.magnitudes_seen: dict[str, Magnitude] = {}

    @property
    def columns(self) -> list[ColumnSchema]:
        return self._store.columns

    def _mask(self, ids: npt.NDArray[Any]) -> Labels:
        """The rows ``ids`` as a mask over the recorded rows (one byte per row)."""
        mask = np.zeros(self._n, dtype=bool)
        mask[np.asarray(ids, dtype=np.int64)] = True
        return mask

    def _streams(self) -> bool:
        """Whether row ids are this memory's rows (a subclass may map them, see ``_mask``)."""
        return type(self)._mask is RecordingData._mask

    def _rows(self, where: Filter | None, missing: str | None = None) -> Labels:
        """The mask of the visible rows matching ``where`` (and missing ``missing``), from
        DuckDB id batches — never a frame, never one id array of the whole table."""
        if where is None and missing is None and self._streams():
            return ~self._store.hidden_mask()
        batches = self._store.row_id_batches(where, missing=missing)
        if not self._streams():
            found = [np.zeros(0, dtype=np.int64), *batches]
            return self._mask(np.concatenate(found))
        mask = np.zeros(self._n, dtype=bool)
        for ids in batches:
            mask[ids] = True
        return mask

    def _record(self, labels: Labels) -> None:
        digest = _digest(self._key, labels)
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

    def select_batches(
        self, columns: Sequence[str], where: Filter | None = None
    ) -> Iterator[pd.DataFrame]:
        """:meth:`select` in batches; the same row sets are recorded once the last batch
        was read (the rows, then each column's non-missing rows where it has a gap)."""
        if not self._streams():
            yield self.select(columns, where)
            return
        found = np.zeros(self._n, dtype=bool)
        missing: dict[str, npt.NDArray[np.bool_]] = {}
        order: list[str] = []
        for frame in self._store.select_batches(columns, where):
            order = [str(c) for c in frame.columns]
            ids = frame.index.to_numpy(dtype=np.int64)
            found[ids] = True
            for column in order:
                absent = frame[column].isna().to_numpy()
                if absent.any():
                    gap = missing.setdefault(column, np.zeros(self._n, dtype=bool))
                    gap[ids[absent]] = True
            yield frame
        self._record(found)
        for column in order:
            if column in missing:
                self._record(found & ~missing[column])

    def grid(self) -> CellGrid:
        """A grid whose labels come batch by batch (see :class:`CellGrid`)."""
        return CellGrid(self)

    def aggregate(
        self,
        expressions: Sequence[str],
        where: Filter | None = None,
        params: Sequence[Any] = (),
        *,
        columns: Sequence[str] = (),
    ) -> tuple[Any, ...]:
        """:meth:`TableStore.aggregate`, recording the row sets ``select(columns, where)``
        records — the rows ``where`` selects, and per column with a missing value among
        them its non-missing ones — from DuckDB row ids, in the same order."""
        names = list(dict.fromkeys(columns))
        by_name = {c.name: c for c in self._store.columns}
        gaps = [f"count(*) FILTER (WHERE {missing_sql(by_name[c])})" for c in names if c in by_name]
        version = self._store.refresh()
        row = self._store.aggregate([*expressions, *gaps], where, params, columns=names)
        found = self._rows(where)
        self._record(found)
        for name, gap in zip(names, row[len(expressions) :], strict=True):
            if gap:
                self._record(found & ~self._rows(where, missing=name).astype(bool))
        if self._store.refresh() != version:  # an opt-out changed between the queries
            raise Refused(
                "gate: the opt-out register changed while the step ran; run the task again"
            )
        return row[: len(expressions)]

    def count(self, where: Filter | None = None) -> int:
        if not self._streams():
            ids = self._store.row_ids(where)
            self._record(self._mask(ids))
            return len(ids)
        found = self._rows(where)
        self._record(found)
        return int(np.count_nonzero(found))

    def _name(self, label: str) -> str:
        name, i = label, 1
        while name in self.magnitudes_seen:
            i += 1
            name = f"{label}#{i}"
        return name

    def magnitudes(self, label: str, values: Sequence[float] | npt.NDArray[Any]) -> None:
        """Record what the dominance rules need about a released sum (never the values)."""
        self.magnitudes_seen[self._name(label)] = magnitude(values)

    def magnitude(self, label: str, figures: Magnitude) -> None:
        """Record a released sum's :class:`Magnitude` computed by DuckDB (``magnitude_sql``)."""
        self.magnitudes_seen[self._name(label)] = figures

    def cells(self, labels: pd.Series) -> None:
        """Record a grid: ``labels`` indexed by row id, one cell label per row used."""
        codes, _ = pd.factorize(labels.to_numpy(), use_na_sentinel=True)
        full = np.full(self._n, -1, dtype=_id_type(self._n))
        full[labels.index.to_numpy(dtype=np.int64)] = np.asarray(codes, dtype=full.dtype)
        self._record(full)


class CellGrid:
    """One grid recorded from batches: the labels :meth:`RecordingData.cells` would record
    for all the batches' rows at once, without holding them (codes in first-seen order,
    as ``pd.factorize`` over the whole column gives them)."""

    def __init__(self, data: RecordingData) -> None:
        self._data = data
        self._codes: dict[Any, int] = {}
        self._full: Labels | None = None
        self._parts: list[pd.Series] = []

    def add(self, labels: pd.Series) -> None:
        """The next batch's rows (indexed by row id), labelled by their cell."""
        if not self._data._streams():  # a subclass maps ids: its own ``cells`` at close
            self._parts.append(labels)
            return
        n = self._data._n
        if self._full is None:
            self._full = np.full(n, -1, dtype=_id_type(n))
        codes, uniques = pd.factorize(labels.to_numpy(), use_na_sentinel=True)
        lookup = np.asarray(
            [self._codes.setdefault(u, len(self._codes)) for u in uniques], dtype=np.int64
        )
        mapped = np.where(codes >= 0, lookup[np.maximum(codes, 0)] if len(lookup) else -1, -1)
        self._full[labels.index.to_numpy(dtype=np.int64)] = mapped

    def close(self) -> None:
        """Record the grid (every row outside the batches: -1, unused)."""
        if not self._data._streams():
            parts = self._parts or [pd.Series([], dtype=np.int64)]
            self._data.cells(pd.concat(parts))
            return
        n = self._data._n
        self._data._record(self._full if self._full is not None else np.full(n, -1, _id_type(n)))
