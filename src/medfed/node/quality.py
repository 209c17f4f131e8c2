"""Data quality at the node: a DQD-style battery over an OMOP CDM, and its gated summary.

How it runs: :func:`run_checks` takes a ``query`` callable (SQL text → DataFrame) and the
schema holding the CDM tables — a DuckDB connection's ``main``, or an
:class:`~medfed.node.stores.omop.OmopStore`'s opt-out view schema inside
``store.session()``, so opted-out persons are not counted either. Each check is one
``SELECT count(*)`` of failing rows and one of the rows it looked at, named like the
OHDSI Data Quality Dashboard's check types:

* conformance — ``isRequired``: required fields not null; ``isForeignKey``: each event's
  ``person_id`` is a person; the column types are checked by
  :func:`~medfed.node.stores.omop_schema.validate_cdm` when the store opens.
* completeness — ``standardConceptRecordCompleteness``: rows whose concept is 0
  (unmapped); ``measurePersonCompleteness``: persons without an observation period.
* plausibility — ``plausibleValueLow/High`` for a few measurement concepts (:data:`RANGES`,
  in their usual units); ``plausibleTemporalAfter``: death not before birth, end dates
  not before start dates; ``plausibleDuringLife``: events within an observation period.
* concept validity — ``isStandardValidConcept``: a non-zero concept id exists in
  ``concept``, is standard and belongs to the table's domain.

A check fails when its failing rows exceed ``threshold`` percent of the rows looked at.
:func:`gated_summary` is what leaves the node (catalogue entry, web page): per check its
name, category, ``table.field``, threshold and pass/fail, and its counts, each through
:func:`~medfed.node.stores.registered.registered_count` — the rule of every registered
count: rounded to ``rounding`` and sticky against the value last registered (the node's
register is the memory), so a patient who opts out with a defect changes no number:

* failing rows: ``0`` when none fail, ``"<k"`` (no percentage) when fewer than
  ``min_cell_count`` do, else the registered count;
* rows looked at: the registered count (None under ``min_cell_count``);
* percentage and pass/fail: computed from those released numbers, never from the exact
  ones (a flip at the threshold would tell a one-row change). A ``"<k"`` check passes
  only if ``k - 1`` failing rows would pass.

The exact results stay at the node (:func:`as_rows`, the steward's own view).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from medfed.common.errors import BadRequest
from medfed.node.stores.registered import CountMemory, registered_count

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from medfed.node.stores.omop import OmopStore
    from medfed.node.stores.tables import TableStore

__all__ = [
    "RANGES",
    "CheckResult",
    "as_rows",
    "gated_summary",
    "omop_quality",
    "run_checks",
    "table_checks",
    "table_quality",
    "with_quality",
]

Query = Callable[[str], pd.DataFrame]

#: measurement concept → (low, high) plausible value in its usual unit
RANGES: dict[int, tuple[str, float, float]] = {
    3019550: ("sodium mmol/L", 100.0, 200.0),
    3023103: ("potassium mmol/L", 1.5, 10.0),
    3025315: ("body weight kg", 0.5, 500.0),
    3036277: ("body height cm", 20.0, 260.0),
    3027018: ("heart rate /min", 20.0, 300.0),
    3004249: ("systolic blood pressure mmHg", 40.0, 300.0),
    3020891: ("body temperature Cel", 25.0, 45.0),
}

_REQUIRED: dict[str, tuple[str, ...]] = {
    "person": ("person_id", "gender_concept_id", "year_of_birth"),
    "observation_period": (
        "person_id",
        "observation_period_start_date",
        "observation_period_end_date",
    ),
    "visit_occurrence": ("person_id", "visit_concept_id", "visit_start_date"),
    "condition_occurrence": ("person_id", "condition_concept_id", "condition_start_date"),
    "drug_exposure": ("person_id", "drug_concept_id", "drug_exposure_start_date"),
    "procedure_occurrence": ("person_id", "procedure_concept_id", "procedure_date"),
    "measurement": ("person_id", "measurement_concept_id", "measurement_date"),
    "observation": ("person_id", "observation_concept_id", "observation_date"),
}
#: table → (concept field, domain, start date, end date or None)
_EVENTS: dict[str, tuple[str, str, str, str | None]] = {
    "visit_occurrence": ("visit_concept_id", "Visit", "visit_start_date", "visit_end_date"),
    "condition_occurrence": (
        "condition_concept_id",
        "Condition",
        "condition_start_date",
        "condition_end_date",
    ),
    "drug_exposure": (
        "drug_concept_id",
        "Drug",
        "drug_exposure_start_date",
        "drug_exposure_end_date",
    ),
    "procedure_occurrence": ("procedure_concept_id", "Procedure", "procedure_date", None),
    "measurement": ("measurement_concept_id", "Measurement", "measurement_date", None),
    "observation": ("observation_concept_id", "Observation", "observation_date", None),
}


#: the other tables a table's checks read (all must be present for them to run)
_MENTIONS: dict[str, set[str]] = {
    **{table: {"person", "observation_period", "concept"} for table in _EVENTS},
    "observation_period": {"person"},
    "person": {"observation_period"},
    "death": {"person"},
}


@dataclass(frozen=True)
class CheckResult:
    """One check's exact result (kept at the node)."""

    name: str
    category: str
    table: str
    field: str
    threshold: float
    failed: int
    rows: int

    @property
    def pct(self) -> float:
        return 100.0 * self.failed / self.rows if self.rows else 0.0

    @property
    def passed(self) -> bool:
        return self.pct <= self.threshold


def _count(query: Query, sql: str) -> int:
    frame = query(sql)
    return int(frame.iloc[0, 0]) if len(frame) else 0


def run_checks(
    query: Query, *, schema: str = "main", tables: Collection[str] | None = None
) -> list[CheckResult]:
    """Run the battery; every number is a count of rows (see the module docstring).

    ``tables``: the CDM tables present (a check of an absent table is skipped).
    """
    s = schema
    out: list[CheckResult] = []

    def check(
        name: str, category: str, table: str, field: str, where: str, threshold: float = 0.0
    ) -> None:
        if tables is not None and not ({table} | _MENTIONS.get(table, set())) <= set(tables):
            return
        rows = _count(query, f"SELECT count(*) FROM {s}.{table}")
        failed = _count(query, f"SELECT count(*) FROM {s}.{table} t WHERE {where}")
        out.append(CheckResult(name, category, table, field, threshold, failed, rows))

    for table, fields in _REQUIRED.items():
        for field in fields:
            check("isRequired", "conformance", table, field, f"t.{field} IS NULL")
        if table != "person":
            check(
                "isForeignKey",
                "conformance",
                table,
                "person_id",
                f"NOT EXISTS (SELECT 1 FROM {s}.person p WHERE p.person_id = t.person_id)",
            )
    for table, (concept, domain, start, end) in _EVENTS.items():
        check(
            "standardConceptRecordCompleteness",
            "completeness",
            table,
            concept,
            f"t.{concept} = 0",
            threshold=5.0,
        )
        check(
            "isStandardValidConcept",
            "conformance",
            table,
            concept,
            f"t.{concept} <> 0 AND NOT EXISTS (SELECT 1 FROM {s}.concept c WHERE "
            f"c.concept_id = t.{concept} AND c.standard_concept = 'S' "
            f"AND c.domain_id = '{domain}')",
        )
        if end is not None:
            check("plausibleStartBeforeEnd", "plausibility", table, end, f"t.{end} < t.{start}")
        check(
            "plausibleDuringLife",
            "plausibility",
            table,
            start,
            f"NOT EXISTS (SELECT 1 FROM {s}.observation_period o WHERE o.person_id = "
            f"t.person_id AND t.{start} BETWEEN o.observation_period_start_date "
            f"AND o.observation_period_end_date)",
            threshold=1.0,
        )
    check(
        "plausibleStartBeforeEnd",
        "plausibility",
        "observation_period",
        "observation_period_end_date",
        "t.observation_period_end_date < t.observation_period_start_date",
    )
    check(
        "measurePersonCompleteness",
        "completeness",
        "person",
        "person_id",
        f"NOT EXISTS (SELECT 1 FROM {s}.observation_period o WHERE o.person_id = t.person_id)",
    )
    check(
        "plausibleTemporalAfter",
        "plausibility",
        "death",
        "death_date",
        f"EXISTS (SELECT 1 FROM {s}.person p WHERE p.person_id = t.person_id AND "
        f"EXTRACT(YEAR FROM t.death_date) < p.year_of_birth)",
    )
    check(
        "plausibleYearOfBirth",
        "plausibility",
        "person",
        "year_of_birth",
        "t.year_of_birth < 1850 OR t.year_of_birth > EXTRACT(YEAR FROM current_date)",
    )
    if tables is not None and "measurement" not in tables:
        return out
    for concept_id, (label, low, high) in RANGES.items():
        name = f"measurement_concept_id = {concept_id}"
        rows = _count(query, f"SELECT count(*) FROM {s}.measurement WHERE {name}")
        for kind, cond in (
            ("Low", f"value_as_number < {low}"),
            ("High", f"value_as_number > {high}"),
        ):
            failed = _count(query, f"SELECT count(*) FROM {s}.measurement WHERE {name} AND {cond}")
            out.append(
                CheckResult(
                    f"plausibleValue{kind} ({label})",
                    "plausibility",
                    "measurement",
                    "value_as_number",
                    1.0,
                    failed,
                    rows,
                )
            )
    return out


def _released(
    result: CheckResult,
    *,
    min_cell_count: int,
    rounding: int,
    memory: CountMemory | None,
    dataset: str,
) -> dict[str, Any]:
    """One check's entry in the summary (see the module docstring)."""
    key = f"quality:{dataset}:{result.name}:{result.table}.{result.field}"

    def count(n: int, part: str) -> int | None:
        return registered_count(
            n,
            key=f"{key}:{part}",
            memory=memory,
            min_cell_count=min_cell_count,
            rounding=rounding,
        )

    rows = count(result.rows, "rows")
    released = count(result.failed, "failed") if result.failed >= min_cell_count else None
    failed: int | str
    pct: float | None = None
    if result.failed == 0:
        failed, pct, passed = 0, 0.0, True
    elif released is None:  # small: shown as "<bound"; the worst case under it decides
        bound = min_cell_count if result.failed < min_cell_count else rounding
        failed = f"<{bound}"
        passed = bool(rows) and 100.0 * (bound - 1) / float(rows or 1) <= result.threshold
    else:
        failed = released
        pct = round(100.0 * released / rows, 1) if rows else None
        passed = pct is not None and pct <= result.threshold
    return {
        "name": result.name,
        "category": result.category,
        "field": f"{result.table}.{result.field}",
        "threshold_pct": result.threshold,
        "status": "pass" if passed else "fail",
        "failed": failed,
        "pct": pct,
        "rows": rows,
    }


def gated_summary(
    results: list[CheckResult],
    *,
    min_cell_count: int,
    rounding: int = 10,
    memory: CountMemory | None = None,
    dataset: str = "",
) -> dict[str, Any]:
    """What may leave the node: every count gated, rounded and sticky (module docstring).

    ``memory``: the node's register of counts it registered before, the counts of
    ``dataset`` kept under ``quality:dataset:check:table.field``; None: rounded only.
    """
    checks = [
        _released(
            result,
            min_cell_count=min_cell_count,
            rounding=rounding,
            memory=memory,
            dataset=dataset,
        )
        for result in results
    ]
    return {
        "data_quality": {
            "checks_run": len(checks),
            "checks_failed": sum(1 for c in checks if c["status"] == "fail"),
            "checks": checks,
        }
    }


def as_rows(results: list[CheckResult]) -> list[dict[str, Any]]:
    """The exact results for the steward's own view at the node."""
    return [{**asdict(r), "pct": r.pct, "passed": r.passed} for r in results]


def omop_quality(
    store: OmopStore,
    *,
    min_cell_count: int,
    rounding: int,
    memory: CountMemory | None = None,
) -> dict[str, Any] | None:
    """The battery over an OMOP store's opt-out views, gated: its catalogue summary part.

    A check the database cannot run (an unusual dialect, a hand-made CDM) leaves the
    dataset registered without the battery; the reason goes to the node's log only.
    """
    try:
        with store.session():
            results = run_checks(store.frame, schema=store.views, tables=set(store.tables))
    except Exception as exc:  # the message could hold a data value: the node's log only
        log.error("data quality of %s not computed: %s", store.name, type(exc).__name__)
        log.debug("data quality failure", exc_info=True)
        return None
    return gated_summary(
        results,
        min_cell_count=min_cell_count,
        rounding=rounding,
        memory=memory,
        dataset=store.name,
    )


def table_checks(
    store: TableStore,
    *,
    required: Sequence[str],
    ranges: Mapping[str, tuple[float, float]],
    table: str = "table",
) -> list[CheckResult]:
    """Checks a table dataset declares in ``node.toml`` (``required``, ``ranges``).

    Read through the store, so opted-out persons' rows are not counted. ``isRequired``:
    a required column's nulls over all rows; ``plausibleValueLow/High``: non-null values
    of a numeric column under / over its declared range. A column the table lacks, or a
    range on a non-numeric column, is refused naming it.
    """
    names = {c.name: c for c in store.columns}
    for column in [*required, *ranges]:
        if column not in names:
            raise BadRequest(f"data quality: '{column}' is not a column of {table}")
    for column, (low, high) in ranges.items():
        if names[column].type.value not in ("integer", "float"):
            raise BadRequest(f"data quality: range on '{column}' of {table}: not numeric")
        if low > high:
            raise BadRequest(f"data quality: range on '{column}' of {table}: low > high")
    wanted = list(dict.fromkeys([*required, *ranges]))
    if not wanted:
        return []
    frame = store.select(wanted)
    out = [
        CheckResult(
            "isRequired", "conformance", table, c, 0.0, int(frame[c].isna().sum()), len(frame)
        )
        for c in required
    ]
    for column, (low, high) in ranges.items():
        values = pd.to_numeric(frame[column], errors="coerce").dropna()
        for kind, failed in (("Low", values < low), ("High", values > high)):
            out.append(
                CheckResult(
                    f"plausibleValue{kind}",
                    "plausibility",
                    table,
                    column,
                    0.0,
                    int(failed.sum()),
                    len(values),
                )
            )
    return out


def table_quality(
    store: TableStore,
    *,
    required: Sequence[str],
    ranges: Mapping[str, tuple[float, float]],
    min_cell_count: int,
    rounding: int,
    table: str = "table",
    memory: CountMemory | None = None,
) -> dict[str, Any] | None:
    """A table dataset's gated summary part; None when it declares no check."""
    if not required and not ranges:
        return None
    results = table_checks(store, required=required, ranges=ranges, table=table)
    return gated_summary(
        results, min_cell_count=min_cell_count, rounding=rounding, memory=memory, dataset=table
    )


def with_quality(
    summary: dict[str, Any] | None, quality: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A dataset's catalogue summary with the data-quality part added (if any)."""
    if quality is None:
        return summary
    return {**(summary or {}), **quality}
