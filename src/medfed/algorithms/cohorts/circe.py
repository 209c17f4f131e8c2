"""Circe cohort definitions (what ATLAS exports): check, hash, compile to SQL.

How it runs: :func:`parse_definition` takes the JSON an ATLAS user exports (the cohort
expression itself, or the whole cohort-definition object with the expression under
``expression``), refuses any key that Circe does not know — Circe itself would ignore it
silently, so a misspelled ``InclusionRules`` would give a different cohort — naming the
key and where it is, and has ``duckcdm``'s port of OHDSI circe-be parse and compile it,
so an unknown criteria type or a malformed value is refused here, on the hub, before
anything is stored. :func:`compile_cohort` renders the OHDSI SQL with SqlRender for the
schemas of one node and translates it to DuckDB or PostgreSQL. :func:`definition_hash`
is the SHA-256 of the canonical JSON (sorted keys, no spaces) — what a saved cohort
version and every node's log name it by.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from functools import cache
from typing import Any, Literal

from duckcdm import sqlrender
from duckcdm.circe import CirceError, build_cohort_query
from duckcdm.circe import _model as circe_model

from medfed.common.errors import BadRequest

__all__ = [
    "MAX_DEFINITION_BYTES",
    "canonical_json",
    "compile_cohort",
    "concept_ids",
    "definition_hash",
    "inclusion_rule_names",
    "parse_definition",
]

MAX_DEFINITION_BYTES = 1_000_000

#: keys ATLAS writes for people (captions) that carry no meaning for the compiler
_DISPLAY_KEYS = frozenset(
    {"STANDARD_CONCEPT_CAPTION", "INVALID_REASON_CAPTION", "VALID_START_DATE", "VALID_END_DATE"}
)


@cache
def _known_keys() -> frozenset[str]:
    keys: set[str] = set(_DISPLAY_KEYS)
    for _, cls in inspect.getmembers(circe_model, inspect.isclass):
        if issubclass(cls, circe_model.Bean):
            fields: list[tuple[Any, ...]] = getattr(cls, "_all_fields")()  # noqa: B009
            keys.update(str(field[0]) for field in fields)
    keys.update(circe_model.CRITERIA_TYPES)
    keys.update(("DateOffset", "CustomEra"))
    return frozenset(keys)


def _unknown(value: Any, path: str, found: list[str]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in _known_keys():
                found.append(where)
            else:
                _unknown(inner, where, found)
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            _unknown(inner, f"{path}[{i}]", found)


def parse_definition(raw: str | bytes | dict[str, Any]) -> dict[str, Any]:
    """The cohort expression of an ATLAS export, checked; :class:`BadRequest` names a problem."""
    if isinstance(raw, str | bytes):
        if len(raw) > MAX_DEFINITION_BYTES:
            raise BadRequest(f"cohort definition is over {MAX_DEFINITION_BYTES} bytes")
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"cohort definition is not JSON: {exc}") from None
    else:
        value = raw
    if not isinstance(value, dict):
        raise BadRequest("cohort definition must be a JSON object (an ATLAS cohort export)")
    if "PrimaryCriteria" not in value and isinstance(value.get("expression"), dict | str):
        inner = value["expression"]  # ATLAS's cohort-definition object around the expression
        value = json.loads(inner) if isinstance(inner, str) else inner
        if not isinstance(value, dict):
            raise BadRequest("cohort definition: 'expression' must be a JSON object")
    if not isinstance(value.get("PrimaryCriteria"), dict):
        raise BadRequest("cohort definition has no PrimaryCriteria (the entry event)")
    found: list[str] = []
    _unknown(value, "", found)
    if found:
        shown = ", ".join(found[:10])
        raise BadRequest(
            f"cohort definition: unknown construct(s) {shown}; Circe does not know them"
        )
    try:
        _compile(value, cohort_id=1, cdm="cdm", results="results", target="results.cohort")
    except CirceError as exc:
        raise BadRequest(f"cohort definition cannot be compiled: {exc}") from None
    if not value["PrimaryCriteria"].get("CriteriaList"):
        raise BadRequest("cohort definition: PrimaryCriteria.CriteriaList is empty")
    return value


def canonical_json(definition: dict[str, Any]) -> str:
    return json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def definition_hash(definition: dict[str, Any]) -> str:
    """SHA-256 (hex) of the definition's canonical JSON."""
    return hashlib.sha256(canonical_json(definition).encode()).hexdigest()


def concept_ids(definition: dict[str, Any]) -> list[int]:
    """Every concept id the definition's concept sets name, ascending."""
    ids: set[int] = set()
    for concept_set in definition.get("ConceptSets") or []:
        for item in (concept_set.get("expression") or {}).get("items") or []:
            concept = item.get("concept") or {}
            if concept.get("CONCEPT_ID") is not None:
                ids.add(int(concept["CONCEPT_ID"]))
    return sorted(ids)


def inclusion_rule_names(definition: dict[str, Any]) -> list[str]:
    """The names of the inclusion rules, in order (``rule N`` where a rule has none)."""
    rules = definition.get("InclusionRules") or []
    return [str(rule.get("name") or f"rule {i + 1}") for i, rule in enumerate(rules)]


def _compile(
    definition: dict[str, Any], *, cohort_id: int, cdm: str, results: str, target: str
) -> str:
    return str(
        build_cohort_query(
            json.dumps(definition),
            cohort_id=cohort_id,
            cdm_schema=cdm,
            vocabulary_schema=cdm,
            target_table=target,
            result_schema=results,
            generate_stats=True,
        )
    )


def compile_cohort(
    definition: dict[str, Any],
    *,
    dialect: Literal["duckdb", "postgresql"],
    cdm_schema: str,
    results_schema: str,
    cohort_id: int = 1,
) -> list[str]:
    """The statements that generate the cohort (with inclusion statistics) in ``dialect``.

    Rows go to ``results_schema.cohort``; the inclusion statistics to Circe's
    ``cohort_inclusion*`` / ``cohort_summary_stats`` / ``cohort_censor_stats`` there.
    """
    try:
        sql = _compile(
            definition,
            cohort_id=cohort_id,
            cdm=cdm_schema,
            results=results_schema,
            target=f"{results_schema}.cohort",
        )
        rendered = sqlrender.render(sql, cdm_database_schema=cdm_schema)
        translated = sqlrender.translate(rendered, dialect)
        statements = sqlrender.split_sql(translated)
    except (CirceError, sqlrender.JavaError) as exc:
        raise BadRequest(f"cohort definition cannot be compiled: {exc}") from None
    out = [s.strip().rstrip(";") for s in statements]
    return [s for s in out if s and not s.upper().startswith("ANALYZE")]
