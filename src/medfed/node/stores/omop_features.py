"""Extract a :class:`~medfed.algorithms.cohorts.features.FeatureSpec` for a generated cohort.

How it runs: the cohort's index rows (first era per person) are the frame's spine. Each
covariate and the outcome read only their concept set's rows from the store
(:meth:`OmopStore.read` with a concept filter — the opt-out applies there), after the
concept set is widened by ``concept_ancestor`` when descendants are asked for; then pandas
joins by person and keeps the window. Person and observation-period columns are read once.
The frame never leaves the node: the node wraps it in a ``TableStore`` for the algorithm,
whose output passes the disclosure gate as any other.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medfed.algorithms.cohorts.features import DOMAINS, Covariate, FeatureSpec, Outcome
from medfed.common.errors import BadRequest
from medfed.node.stores.omop import OmopStore
from medfed.node.stores.omop_cohort import GeneratedCohort
from medfed.node.stores.tables import TableStore

__all__ = ["cohort_table", "extract_features"]

FEMALE, MALE = 8532, 8507


def _concept_set(store: OmopStore, concepts: list[int], descendants: bool) -> list[int]:
    if not descendants:
        return sorted(set(concepts))
    rows = store.read(
        "concept_ancestor",
        ["descendant_concept_id"],
        concept_ids=concepts,
        concept_column="ancestor_concept_id",
    )
    return sorted(set(concepts) | {int(c) for c in rows["descendant_concept_id"]})


def _events(store: OmopStore, domain: str, concepts: list[int], value: bool) -> pd.DataFrame:
    table, concept_column, date_column = DOMAINS[domain]
    columns = ["person_id", date_column, *(["value_as_number"] if value else [])]
    frame = store.read(table, columns, concept_ids=concepts, concept_column=concept_column)
    frame = frame.rename(columns={date_column: "date"})
    frame["date"] = pd.to_datetime(frame["date"])
    frame["person_id"] = frame["person_id"].astype("int64")
    return frame


def _covariate(store: OmopStore, spine: pd.DataFrame, cov: Covariate) -> pd.Series:
    concepts = _concept_set(store, cov.concepts, cov.descendants)
    events = _events(store, cov.domain, concepts, cov.value == "last")
    joined = events.merge(spine[["person_id", "index_date"]], on="person_id")
    days = (joined["date"] - joined["index_date"]).dt.days
    inside = joined[(days >= cov.window[0]) & (days <= cov.window[1])]
    by_person = spine["person_id"]
    if cov.value == "presence":
        present = set(inside["person_id"].tolist())
        return by_person.map(lambda p: 1 if p in present else 0).astype("int64")
    last = inside.sort_values(["person_id", "date"]).groupby("person_id")["value_as_number"]
    values = last.last()
    return by_person.map(values).astype("float64")


def _observation_end(store: OmopStore, spine: pd.DataFrame) -> pd.Series:
    periods = store.read(
        "observation_period",
        ["person_id", "observation_period_start_date", "observation_period_end_date"],
    )
    periods["person_id"] = periods["person_id"].astype("int64")
    for column in ("observation_period_start_date", "observation_period_end_date"):
        periods[column] = pd.to_datetime(periods[column])
    joined = spine[["person_id", "index_date"]].merge(periods, on="person_id")
    inside = joined[
        (joined["observation_period_start_date"] <= joined["index_date"])
        & (joined["observation_period_end_date"] >= joined["index_date"])
    ]
    end = inside.groupby("person_id")["observation_period_end_date"].max()
    return spine["person_id"].map(end)


def _outcome(
    store: OmopStore, spine: pd.DataFrame, outcome: Outcome
) -> tuple[pd.Series, pd.Series]:
    if outcome.domain == "death":
        events = store.read("death", ["person_id", "death_date"])
        events = events.rename(columns={"death_date": "date"})
        events["date"] = pd.to_datetime(events["date"])
        events["person_id"] = events["person_id"].astype("int64")
    else:
        concepts = _concept_set(store, outcome.concepts, outcome.descendants)
        events = _events(store, outcome.domain, concepts, False)
    end = _observation_end(store, spine)
    joined = events.merge(spine[["person_id", "index_date"]], on="person_id")
    joined = joined[joined["date"] > joined["index_date"]]
    first = joined.groupby("person_id")["date"].min()
    event_date = spine["person_id"].map(first)
    event = event_date.notna() & (event_date <= end)
    stop = event_date.where(event, end)
    days = (stop - spine["index_date"]).dt.days
    return event.astype("int64"), days.astype("float64")


def extract_features(store: OmopStore, cohort: GeneratedCohort, spec: FeatureSpec) -> pd.DataFrame:
    """One row per cohort person (sorted by person id) with the declared variables."""
    missing = store.missing_concepts(spec.concept_ids())
    if missing:
        shown = ", ".join(str(c) for c in missing[:20])
        raise BadRequest(f"features: concept id(s) {shown} are not in the vocabulary")
    spine = cohort.index_rows().sort_values("person_id").reset_index(drop=True)
    out = pd.DataFrame(index=spine.index)
    if spec.age or spec.sex:
        person = store.read("person", ["person_id", "year_of_birth", "gender_concept_id"])
        person = person.set_index(person["person_id"].astype("int64"))
        if spec.age:
            born = spine["person_id"].map(person["year_of_birth"]).astype("float64")
            out["age"] = spine["index_date"].dt.year.astype("float64") - born
        if spec.sex:
            gender = spine["person_id"].map(person["gender_concept_id"])
            out["female"] = np.where(gender == FEMALE, 1.0, np.where(gender == MALE, 0.0, np.nan))
    for cov in spec.covariates:
        out[cov.name] = _covariate(store, spine, cov).to_numpy()
    if spec.outcome is not None:
        event, days = _outcome(store, spine, spec.outcome)
        out[f"{spec.outcome.name}_event"] = event.to_numpy()
        out[f"{spec.outcome.name}_time"] = days.to_numpy()
    return out


def cohort_table(store: OmopStore, cohort: GeneratedCohort, spec: FeatureSpec) -> TableStore:
    """The cohort's features as the ``LocalData`` every algorithm reads (``where=`` on top)."""
    return TableStore(extract_features(store, cohort, spec), name=f"{store.name}:cohort")
