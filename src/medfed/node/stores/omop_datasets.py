"""The node's OMOP datasets (``[[omop]]`` in ``node.toml``) and cohort runs on them.

How it runs:

* :meth:`OmopDataset.open` opens the :class:`~medfed.node.stores.omop.OmopStore` (the
  schema checked against CDM 5.4: a problem refuses the dataset, naming it; the node
  withholds it and serves the others), with the node's opt-out register below every read,
  and the dataset's row-set memory: one row per person of the CDM (``person_id``
  ascending, opted-out persons included so positions never move), keyed by a hash of the
  person ids and the tables' sizes (new data: a new memory, as a new table version).
* :meth:`OmopDataset.registration` is what the hub gets: the CDM's columns as
  ``table.column``, the person count rounded like a table's row count, and a summary
  ``{"omop": {"cdm_version", "vocabulary_version", "tables": {table: rows}}}`` whose
  counts are each withheld under ``min_cell_count``, rounded and sticky
  (:func:`~medfed.node.stores.registered.registered_count`, as a table dataset's row
  count: with the node's register as memory, a one-person opt-out moves none of them).
* :meth:`OmopDataset.prepare` serves one run of a task that names a saved cohort: checks
  the definition's hash, generates the cohort (:func:`~medfed.node.stores.omop_cohort.
  generate_cohort`), extracts the feature specification (:func:`~medfed.node.stores.
  omop_features.cohort_table`) and returns a :class:`CohortRun`: the
  :class:`CohortRecordingData` the local step reads (every row set it touches is recorded
  as a set of *persons* of the CDM) and, for ``cohort_counts``, the attrition source,
  which records the person set behind each count. So any two releases over cohorts — of
  any algorithm — whose persons differ by 1..k-1 are refused by the one row-set memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from medfed.algorithms.cohorts.circe import definition_hash, parse_definition
from medfed.algorithms.cohorts.counts import CohortAttrition
from medfed.algorithms.cohorts.features import FeatureSpec
from medfed.algorithms.cohorts.resources import ResolvedCohort
from medfed.common.errors import BadRequest
from medfed.common.resources import DatasetRegister
from medfed.common.schemas import ColumnSchema, ColumnType
from medfed.node.gate.rowsets import RecordingData, RowSetMemory
from medfed.node.stores.omop import RESULT_TABLES, OmopStore
from medfed.node.stores.omop_cohort import GeneratedCohort, generate_cohort
from medfed.node.stores.omop_features import cohort_table
from medfed.node.stores.omop_schema import cdm_spec
from medfed.node.stores.registered import CountMemory, registered_count
from medfed.node.stores.tables import TableStore

__all__ = ["CohortRecordingData", "CohortRun", "OmopDataset", "cohort_of_run"]

IntArray = npt.NDArray[np.int64]

_TYPES = {
    "integer": ColumnType.integer,
    "float": ColumnType.float,
    "date": ColumnType.date,
    "datetime": ColumnType.date,
    "text": ColumnType.string,
}


class CohortRecordingData(RecordingData):
    """:class:`RecordingData` over a cohort's feature table, recording persons of the CDM.

    Row ``i`` of the feature table is the person at ``positions[i]`` of the CDM's person
    list; every recorded row set becomes a mask over all ``n_persons``.
    """

    def __init__(
        self, store: TableStore, *, key: bytes, positions: IntArray, n_persons: int
    ) -> None:
        super().__init__(store, key=key)
        self._positions = positions
        self._n = n_persons

    def _mask(self, ids: npt.NDArray[Any]) -> IntArray:
        mask = np.zeros(self._n, dtype=np.int64)
        mask[self._positions[np.asarray(ids, dtype=np.int64)]] = 1
        return mask

    def cells(self, labels: pd.Series) -> None:
        codes, _ = pd.factorize(labels.to_numpy(), use_na_sentinel=True)
        full = np.full(self._n, -1, dtype=np.int64)
        full[self._positions[labels.index.to_numpy(dtype=np.int64)]] = np.asarray(
            codes, dtype=np.int64
        )
        self._record(full)

    def persons(self, positions: IntArray) -> None:
        """Record a set of persons (positions in the CDM's person list)."""
        mask = np.zeros(self._n, dtype=np.int64)
        mask[positions] = 1
        self._record(mask)


@dataclass
class CohortRun:
    """One run's cohort at this node: the data the local step reads and its counts."""

    cohort: GeneratedCohort
    data: CohortRecordingData
    universe: IntArray
    rounding: int
    rules: list[str]

    def _positions(self, ids: list[int]) -> IntArray:
        return np.searchsorted(self.universe, np.asarray(ids, dtype=np.int64)).astype(np.int64)

    def attrition(self) -> CohortAttrition:
        """The exact counts (``cohort_counts``); records the person set behind each."""
        base, steps, final = self.cohort.person_sets()
        for ids in (base, *steps, final):
            self.data.persons(self._positions(ids))
        return CohortAttrition(
            rules=list(self.rules),
            base_persons=self.cohort.base_persons,
            attrition=[s.persons for s in self.cohort.attrition],
            persons=self.cohort.persons,
        )


def cohort_of_run(params: dict[str, Any]) -> tuple[ResolvedCohort, FeatureSpec] | None:
    """The cohort and feature specification a run's parameters carry (None: no cohort)."""
    raw = params.get("cohort")
    if raw is None:
        return None
    try:
        cohort = ResolvedCohort.model_validate(raw)
        spec = FeatureSpec.model_validate(params.get("features") or {})
    except ValueError as exc:
        raise BadRequest(f"cohort: malformed task parameters: {exc}") from None
    if definition_hash(cohort.definition) != cohort.hash:
        raise BadRequest("cohort: the definition does not match its hash")
    return cohort, spec


class OmopDataset:
    """One ``[[omop]]`` dataset of the node: its store, person list and row-set memory."""

    def __init__(self, name: str, store: OmopStore, memory_dir: Path, description: str) -> None:
        self.name = name
        self.store = store
        self.description = description
        universe = store.all_person_ids()
        self.universe: IntArray = np.asarray(universe, dtype=np.int64)
        excluded = store.excluded_persons() if store.excluded_persons is not None else set()
        digest = hashlib.sha256(self.universe.tobytes())
        digest.update(repr(sorted(store.tables)).encode())
        digest.update(repr(len(universe)).encode())
        self.sha256 = digest.hexdigest()
        hidden = np.isin(self.universe, np.asarray(sorted(excluded), dtype=np.int64))
        self.memory = RowSetMemory(memory_dir, self.sha256, len(universe), hidden=hidden)

    @classmethod
    def open(
        cls,
        *,
        name: str,
        duckdb_path: Path | None,
        url: str | None,
        schema: str,
        description: str,
        excluded_persons: Callable[[], set[int]] | None,
        memory_dir: Path,
    ) -> OmopDataset:
        store = OmopStore(
            duckdb_path=duckdb_path,
            url=url,
            schema=schema,
            name=name,
            excluded_persons=excluded_persons,
        )
        try:
            return cls(name, store, memory_dir, description)
        except Exception:
            store.close()
            raise

    def registration(
        self, *, min_cell_count: int, rounding: int, memory: CountMemory | None = None
    ) -> DatasetRegister:
        """What the hub's catalogue holds of this CDM (counts gated, rounded and sticky).

        ``memory``: the node's register of counts it registered before (see
        :mod:`~medfed.node.stores.registered`); the persons are kept under the dataset's
        name, like a table dataset's rows, each table under ``name:omop:table``.
        """
        counts = self.store.row_counts()

        def gate(n: int, key: str) -> int | None:
            return registered_count(
                n, key=key, memory=memory, min_cell_count=min_cell_count, rounding=rounding
            )

        spec = cdm_spec()
        columns = [
            ColumnSchema(name=f"{table}.{column}", type=_TYPES.get(kind, ColumnType.string))
            for table in self.store.tables
            if table not in RESULT_TABLES
            for column, kind in spec[table]
        ]
        summary = {
            "omop": {
                "cdm_version": "5.4",
                "vocabulary_version": self.store.vocabulary_version(),
                "tables": {
                    table: gate(n, f"{self.name}:omop:{table}")
                    for table, n in sorted(counts.items())
                },
            }
        }
        return DatasetRegister(
            name=self.name,
            description=self.description,
            columns=columns,
            row_count=gate(counts.get("person", 0), self.name),
            summary=summary,
        )

    def prepare(
        self,
        cohort: ResolvedCohort,
        spec: FeatureSpec,
        *,
        key: bytes,
        rounding: int,
    ) -> CohortRun:
        """Generate ``cohort`` here and extract ``spec``: the run's data (see module doc)."""
        definition = parse_definition(cohort.definition)
        generated = generate_cohort(self.store, definition)
        table = cohort_table(self.store, generated, spec)
        persons = generated.index_rows()["person_id"].sort_values().to_numpy(dtype=np.int64)
        positions = np.searchsorted(self.universe, persons).astype(np.int64)
        data = CohortRecordingData(
            table, key=key, positions=positions, n_persons=len(self.universe)
        )
        rules = [step.rule for step in generated.attrition]
        return CohortRun(
            cohort=generated, data=data, universe=self.universe, rounding=rounding, rules=rules
        )

    def close(self) -> None:
        self.store.close()
