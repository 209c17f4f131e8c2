"""The feature specification: which analysis variables a cohort becomes.

A researcher declares, next to ``cohort=``, what each person's row holds (JSON)::

    {"age": true, "sex": true,
     "covariates": [
        {"name": "tsize", "domain": "measurement", "concepts": [2000001001],
         "window": [-30, 0], "value": "last"},
        {"name": "horTh", "domain": "drug", "concepts": [2000002000],
         "descendants": true, "window": [-30, 0]}],
     "outcome": {"name": "recurrence", "domain": "condition", "concepts": [2000000150]}}

* ``age``: whole years at the index date, ``year(index) - year_of_birth``;
  ``sex``: ``female`` = 1 for the OMOP concept 8532 (FEMALE), 0 for 8507 (MALE), else null.
* a covariate: the concept set (with descendants through ``concept_ancestor`` when asked)
  in the domain's table, in the window ``[start, end]`` days relative to the index date
  (both ends included). ``value = "presence"`` gives 1/0; ``"last"`` the latest
  ``value_as_number`` in the window (null when none).
* the outcome: the first event of the concept set (or ``domain = "death"``) strictly after
  the index date and no later than the end of the person's observation period containing
  the index date: ``{name}_event`` = 1 and ``{name}_time`` = days from index to it;
  otherwise 0 and the days to the end of observation (censoring).

The frame has one row per cohort person (the first cohort era), sorted by ``person_id``,
which is not a column: algorithms see only the declared variables. It is what
:class:`~medfed.algorithms.base.LocalData` serves for a cohort task (``TableStore``).
This module only declares and checks; :mod:`medfed.node.stores.omop_features` extracts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DOMAINS", "Covariate", "FeatureSpec", "Outcome"]

Domain = Literal["condition", "measurement", "observation", "drug", "procedure"]

#: domain → (table, concept column, date column)
DOMAINS: dict[str, tuple[str, str, str]] = {
    "condition": ("condition_occurrence", "condition_concept_id", "condition_start_date"),
    "measurement": ("measurement", "measurement_concept_id", "measurement_date"),
    "observation": ("observation", "observation_concept_id", "observation_date"),
    "drug": ("drug_exposure", "drug_concept_id", "drug_exposure_start_date"),
    "procedure": ("procedure_occurrence", "procedure_concept_id", "procedure_date"),
}

_NAME = r"^[A-Za-z][A-Za-z0-9_.]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Covariate(_Strict):
    name: str = Field(pattern=_NAME)
    domain: Domain
    concepts: list[int] = Field(min_length=1, max_length=1000)
    descendants: bool = False
    window: tuple[int, int] = (-365, 0)
    value: Literal["presence", "last"] = "presence"

    @model_validator(mode="after")
    def _window(self) -> Covariate:
        if self.window[0] > self.window[1]:
            raise ValueError(f"covariate {self.name}: window start is after its end")
        if self.value == "last" and self.domain not in ("measurement", "observation"):
            raise ValueError(f"covariate {self.name}: value 'last' needs a measurement")
        return self


class Outcome(_Strict):
    name: str = Field(pattern=_NAME)
    domain: Domain | Literal["death"]
    concepts: list[int] = Field(default_factory=list, max_length=1000)
    descendants: bool = False

    @model_validator(mode="after")
    def _concepts(self) -> Outcome:
        if self.domain != "death" and not self.concepts:
            raise ValueError(f"outcome {self.name}: give its concepts")
        return self


class FeatureSpec(_Strict):
    age: bool = True
    sex: bool = True
    covariates: list[Covariate] = Field(default_factory=list, max_length=200)
    outcome: Outcome | None = None

    @model_validator(mode="after")
    def _unique(self) -> FeatureSpec:
        names = [c.name for c in self.covariates]
        if self.age:
            names.append("age")
        if self.sex:
            names.append("female")
        if self.outcome is not None:
            names += [f"{self.outcome.name}_event", f"{self.outcome.name}_time"]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"feature name(s) {', '.join(twice)} given twice")
        return self

    def concept_ids(self) -> list[int]:
        ids = {c for cov in self.covariates for c in cov.concepts}
        if self.outcome is not None:
            ids.update(self.outcome.concepts)
        return sorted(ids)
