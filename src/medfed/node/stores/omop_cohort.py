"""Generating a Circe cohort in an :class:`~medfed.node.stores.omop.OmopStore`.

How it runs: :func:`generate_cohort` first checks that every concept id of the
definition's concept sets is in the node's vocabulary (a missing one is refused, naming
the ids; nothing is generated). Then, holding the store's session (the opt-out refreshed,
so the Circe SQL reads only the filtered views), it (re)creates the result tables in the
store's private results schema, runs the compiled statements
(:func:`medfed.algorithms.cohorts.circe.compile_cohort`), reads the cohort rows and the
inclusion statistics, and empties the result tables again — the hospital's database is
never written (DuckDB: an in-memory schema; PostgreSQL: the session's ``pg_temp``).

Attrition is Circe's person-level view (``mode_id = 1``, the best event per person, as
ATLAS shows it): the persons with a qualifying entry event, then after each inclusion
rule in order the persons whose best event meets that rule and every earlier one.
The counts are exact here; the algorithm that releases them gates and rounds them.
Just before Circe drops its ``best_events`` table, the person-level rule masks are read
too (:attr:`GeneratedCohort.person_masks`), so the node can record the person set behind
every released count in its row-set memory. Without inclusion rules Circe writes no
statistics: the base is then the cohort's own persons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from medfed.algorithms.cohorts.circe import compile_cohort, concept_ids, inclusion_rule_names
from medfed.common.errors import BadRequest
from medfed.node.stores.omop import OmopStore

__all__ = ["AttritionStep", "GeneratedCohort", "generate_cohort", "released_counts"]

_RESULT_TABLES = {
    "cohort": "cohort_definition_id BIGINT, subject_id BIGINT, cohort_start_date DATE, "
    "cohort_end_date DATE",
    "cohort_inclusion": "cohort_definition_id BIGINT, rule_sequence INTEGER, name VARCHAR(255), "
    "description VARCHAR(1000)",
    "cohort_inclusion_result": "cohort_definition_id BIGINT, inclusion_rule_mask BIGINT, "
    "person_count BIGINT, mode_id INTEGER",
    "cohort_inclusion_stats": "cohort_definition_id BIGINT, rule_sequence INTEGER, "
    "person_count BIGINT, gain_count BIGINT, person_total BIGINT, mode_id INTEGER",
    "cohort_summary_stats": "cohort_definition_id BIGINT, base_count BIGINT, "
    "final_count BIGINT, mode_id INTEGER",
    "cohort_censor_stats": "cohort_definition_id BIGINT, lost_count BIGINT",
}


@dataclass(frozen=True)
class AttritionStep:
    """Persons left after an inclusion rule (and every rule before it)."""

    rule: str
    persons: int


@dataclass(frozen=True)
class GeneratedCohort:
    """A cohort at one node: its rows (exact, node-only) and its attrition."""

    #: one row per cohort era: subject_id, cohort_start_date, cohort_end_date
    rows: pd.DataFrame
    #: persons with a qualifying entry event (before the inclusion rules)
    base_persons: int
    attrition: list[AttritionStep]
    #: person_id and the rule mask of the person's best event (bit k: rule k holds);
    #: empty without inclusion rules
    person_masks: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({"person_id": [], "mask": []}, dtype="int64")
    )

    @property
    def persons(self) -> int:
        return int(self.rows["subject_id"].nunique())

    def person_sets(self) -> tuple[list[int], list[list[int]], list[int]]:
        """The persons behind each count: the base, each attrition step, the cohort."""
        final = sorted({int(p) for p in self.rows["subject_id"]})
        if not self.attrition:
            return final, [], final
        ids = self.person_masks["person_id"].astype("int64").to_numpy()
        masks = self.person_masks["mask"].astype("int64").to_numpy()
        steps = []
        for k in range(len(self.attrition)):
            need = (1 << (k + 1)) - 1
            steps.append(sorted({int(p) for p in ids[(masks & need) == need]}))
        return sorted({int(p) for p in ids}), steps, final

    def index_rows(self) -> pd.DataFrame:
        """The first era of each person: person_id and index_date (the cohort start)."""
        first = self.rows.sort_values(["subject_id", "cohort_start_date"]).drop_duplicates(
            "subject_id"
        )
        return pd.DataFrame(
            {
                "person_id": first["subject_id"].astype("int64").to_numpy(),
                "index_date": pd.to_datetime(first["cohort_start_date"]).to_numpy(),
                "cohort_end_date": pd.to_datetime(first["cohort_end_date"]).to_numpy(),
            }
        )


def _reset_results(store: OmopStore) -> None:
    temp = "TEMP " if store.dialect == "postgresql" else ""
    for table, columns in _RESULT_TABLES.items():
        store.execute(f"DROP TABLE IF EXISTS {store.results}.{table}")
        target = table if store.dialect == "postgresql" else f"{store.results}.{table}"
        store.execute(f"CREATE {temp}TABLE {target} ({columns})")


def _drop_temp(store: OmopStore) -> None:
    """Circe's own temporary tables, left behind when a statement failed half-way."""
    for table in (
        "codesets",
        "qualified_events",
        "inclusion_events",
        "included_events",
        "cohort_rows",
        "final_cohort",
        "inclusion_rules",
        "best_events",
        "strategy_ends",
    ):
        store.execute(f"DROP TABLE IF EXISTS {table}")


def _attrition(result: pd.DataFrame, names: list[str]) -> list[AttritionStep]:
    steps: list[AttritionStep] = []
    masks = result["inclusion_rule_mask"].astype("int64").to_numpy()
    counts = result["person_count"].astype("int64").to_numpy()
    for k, name in enumerate(names):
        need = (1 << (k + 1)) - 1
        steps.append(AttritionStep(rule=name, persons=int(counts[(masks & need) == need].sum())))
    return steps


_PERSON_MASKS = (
    "SELECT q.person_id, CAST(SUM(COALESCE(POWER(CAST(2 AS BIGINT), i.inclusion_rule_id), 0)) "
    "AS BIGINT) AS mask FROM best_events q LEFT JOIN inclusion_events i "
    "ON q.person_id = i.person_id AND q.event_id = i.event_id GROUP BY q.person_id, q.event_id"
)


def _ends_best_events(statement: str) -> bool:
    words = " ".join(statement.lower().split())
    return words in ("truncate table best_events", "delete from best_events")


def generate_cohort(store: OmopStore, definition: dict[str, Any]) -> GeneratedCohort:
    """Generate ``definition`` (a checked Circe expression) over the store's persons."""
    missing = store.missing_concepts(concept_ids(definition))
    if missing:
        shown = ", ".join(str(c) for c in missing[:20])
        raise BadRequest(
            f"cohort: concept id(s) {shown} are not in the vocabulary of dataset '{store.name}'"
        )
    statements = compile_cohort(
        definition, dialect=store.dialect, cdm_schema=store.views, results_schema=store.results
    )
    names = inclusion_rule_names(definition)
    with store.session():
        _reset_results(store)
        try:
            masks: pd.DataFrame | None = None
            for statement in statements:
                if masks is None and _ends_best_events(statement):
                    masks = store.frame(_PERSON_MASKS)
                store.execute(statement)
            rows = store.frame(
                f"SELECT subject_id, cohort_start_date, cohort_end_date FROM "
                f"{store.results}.cohort ORDER BY subject_id, cohort_start_date"
            )
            summary = store.frame(
                f"SELECT base_count FROM {store.results}.cohort_summary_stats WHERE mode_id = 1"
            )
            result = store.frame(
                f"SELECT inclusion_rule_mask, person_count FROM "
                f"{store.results}.cohort_inclusion_result WHERE mode_id = 1"
            )
        finally:
            _drop_temp(store)
            for table in _RESULT_TABLES:
                store.execute(f"DROP TABLE IF EXISTS {store.results}.{table}")
    rows["subject_id"] = rows["subject_id"].astype("int64")
    base = int(summary["base_count"].iloc[0]) if len(summary) else int(rows["subject_id"].nunique())
    generated = GeneratedCohort(rows=rows, base_persons=base, attrition=_attrition(result, names))
    if masks is not None and names:
        masks = masks.astype({"person_id": "int64", "mask": "int64"})
        generated = GeneratedCohort(
            rows=rows, base_persons=base, attrition=generated.attrition, person_masks=masks
        )
    return generated


def released_counts(
    cohort: GeneratedCohort, *, min_cell_count: int, rounding: int
) -> dict[str, Any]:
    """The counts that may leave the node: each under ``min_cell_count`` (zero included)
    withheld as None, the others rounded to the nearest multiple of ``rounding`` (as
    discovery counts are); attrition in rule order."""

    def gate(n: int) -> int | None:
        if n < min_cell_count:
            return None
        return int(round(n / rounding) * rounding)

    return {
        "base_persons": gate(cohort.base_persons),
        "attrition": [{"rule": s.rule, "persons": gate(s.persons)} for s in cohort.attrition],
        "persons": gate(cohort.persons),
    }
