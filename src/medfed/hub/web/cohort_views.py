"""What the cohort pages show, drawn from a saved definition and a ``cohort_counts`` result.

Pure functions (nothing read from the database):

* :func:`definition_summary` — a Circe definition in words: its concept sets (concepts,
  with descendants or excluded), the entry event (criteria types and the concept set each
  names), the inclusion rules by name, the exit and the era settings;
* :func:`counts_table` — a ``cohort_counts`` result as one row per node (entry, each
  inclusion rule, the cohort) and the total row. A count the node withheld (under its
  minimum cell count) reads "withheld"; the result itself gives a node whose whole answer
  was withheld the same null counts as one whose every count is under the minimum, so the
  table never tells the two apart (which node withheld its answer stays unsaid, as on the
  task page);
* :func:`attrition_svg` — the attrition as horizontal bars, one group per step and one bar
  per node, drawn as SVG with presentation attributes only (the pages' content security
  policy allows no inline style or script), every text escaped — as
  :mod:`medfed.hub.web.validation_figures` draws its figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from medfed.algorithms.cohorts.counts import CohortCountsResult

__all__ = [
    "WITHHELD",
    "ConceptSetView",
    "CountsTable",
    "DefinitionSummary",
    "attrition_svg",
    "counts_table",
    "definition_summary",
]

WITHHELD = "withheld"


@dataclass(frozen=True)
class ConceptSetView:
    id: int
    name: str
    #: "2000000100 Breast cancer (with descendants)", …
    concepts: list[str]


@dataclass(frozen=True)
class DefinitionSummary:
    concept_sets: list[ConceptSetView]
    entry: list[str]
    observation_window: str
    inclusion_rules: list[tuple[str, str]]
    exit: str
    collapse: str


def _concept(item: Mapping[str, Any]) -> str:
    concept = item.get("concept") or {}
    text = str(concept.get("CONCEPT_ID", "?"))
    if concept.get("CONCEPT_NAME"):
        text += f" {concept['CONCEPT_NAME']}"
    flags = [
        word
        for key, word in (
            ("includeDescendants", "with descendants"),
            ("includeMapped", "with mapped"),
            ("isExcluded", "excluded"),
        )
        if item.get(key)
    ]
    return text + (f" ({', '.join(flags)})" if flags else "")


def _criteria(criteria: Mapping[str, Any], sets: Mapping[int, str]) -> str:
    """``ConditionOccurrence of 'breast cancer'`` for ``{"ConditionOccurrence": {...}}``."""
    parts = []
    for kind, body in criteria.items():
        codeset = body.get("CodesetId") if isinstance(body, dict) else None
        named = f" of '{sets.get(int(codeset), f'set {codeset}')}'" if codeset is not None else ""
        parts.append(f"{kind}{named}")
    return ", ".join(parts) or "(none)"


def _exit(definition: Mapping[str, Any], sets: Mapping[int, str]) -> str:
    strategy = definition.get("EndStrategy") or {}
    if isinstance(strategy.get("DateOffset"), dict):
        offset = strategy["DateOffset"]
        return f"{offset.get('Offset', 0)} days after the {offset.get('DateField', 'StartDate')}"
    if isinstance(strategy.get("CustomEra"), dict):
        era = strategy["CustomEra"]
        drug = sets.get(int(era.get("DrugCodesetId", -1)), f"set {era.get('DrugCodesetId')}")
        return f"end of the drug era of '{drug}' (gap {era.get('GapDays', 0)} days)"
    return "end of the observation period"


def definition_summary(definition: Mapping[str, Any]) -> DefinitionSummary:
    """The parts of a (parsed) Circe definition a researcher reads first."""
    sets = [
        ConceptSetView(
            int(s.get("id", i)),
            str(s.get("name") or f"set {i}"),
            [_concept(item) for item in (s.get("expression") or {}).get("items") or []],
        )
        for i, s in enumerate(definition.get("ConceptSets") or [])
    ]
    names = {s.id: s.name for s in sets}
    primary = definition.get("PrimaryCriteria") or {}
    window = primary.get("ObservationWindow") or {}
    limit = (primary.get("PrimaryCriteriaLimit") or {}).get("Type", "All")
    rules = [
        (str(rule.get("name") or f"rule {i + 1}"), str(rule.get("description") or ""))
        for i, rule in enumerate(definition.get("InclusionRules") or [])
    ]
    collapse = definition.get("CollapseSettings") or {}
    return DefinitionSummary(
        concept_sets=sets,
        entry=[_criteria(c, names) for c in primary.get("CriteriaList") or []]
        + [f"events per person: {str(limit).lower()}"],
        observation_window=(
            f"{window.get('PriorDays', 0)} days before and {window.get('PostDays', 0)} "
            "days after the entry event in observation"
        ),
        inclusion_rules=rules,
        exit=_exit(definition, names),
        collapse=f"{collapse.get('CollapseType', 'ERA')}, pad {collapse.get('EraPad', 0)} days",
    )


@dataclass(frozen=True)
class CountsTable:
    headers: list[str]
    #: (node label, counts as text) per node; the last row is the total
    rows: list[tuple[str, list[str]]]
    #: (label, numbers or None) per node, for the figure
    series: list[tuple[str, list[int | None]]]


def _cells(values: Sequence[int | None]) -> list[str]:
    return [WITHHELD if v is None else str(v) for v in values]


def counts_table(result: CohortCountsResult, labels: Mapping[int, str]) -> CountsTable:
    """Rows per node and the total; see the module docstring for withheld counts."""
    width = len(result.rules)
    series: list[tuple[str, list[int | None]]] = []
    for node in result.nodes:
        label = labels.get(node.dataset_id, f"dataset #{node.dataset_id}")
        steps = list(node.attrition) + [None] * (width - len(node.attrition))
        values: list[int | None] = [node.base_persons, *steps[:width], node.persons]
        series.append((label, values))
    total = [result.total_base_persons, *result.total_attrition, result.total_persons]
    rows = [(label, _cells(values)) for label, values in series]
    rows.append(("total", _cells(total)))
    headers = ["node", "entry event", *result.rules, "in the cohort"]
    return CountsTable(headers=headers, rows=rows, series=series)


_BAR, _GAP, _LEFT, _WIDTH, _TOP = 12, 10, 190, 640, 28


def attrition_svg(table: CountsTable) -> str:
    """Horizontal bars of each node's count per step; "withheld" where there is none."""
    steps = table.headers[1:]
    nodes = len(table.series) or 1
    group = nodes * _BAR + _GAP
    height = _TOP + len(steps) * group + 8
    known = [v for _, values in table.series for v in values if v is not None]
    top = max(known, default=0) or 1
    span = _WIDTH - _LEFT - 70
    shades = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#c53030", "#319795"]
    title = "Persons per step, per node"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="figure" id="attrition-figure" '
        f'width="{_WIDTH}" height="{height}" viewBox="0 0 {_WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{_LEFT}" y="14" font-size="11">{escape(title)}</text>',
    ]
    for n, (label, _) in enumerate(table.series):
        x = _LEFT + 200 + n * 120
        parts.append(
            f'<rect x="{x}" y="5" width="10" height="10" fill="{shades[n % len(shades)]}"/>'
            f'<text x="{x + 14}" y="14" font-size="10">{escape(label[:18])}</text>'
        )
    for s, step in enumerate(steps):
        y0 = _TOP + s * group
        parts.append(
            f'<text x="{_LEFT - 6}" y="{y0 + group / 2}" text-anchor="end" '
            f'font-size="11">{escape(step[:30])}</text>'
        )
        for n, (_, values) in enumerate(table.series):
            y = y0 + n * _BAR
            value = values[s]
            if value is None:
                parts.append(
                    f'<text x="{_LEFT + 4}" y="{y + _BAR - 2}" font-size="10" '
                    f'fill="#666">{WITHHELD}</text>'
                )
                continue
            w = max(1.0, span * value / top)
            parts.append(
                f'<rect x="{_LEFT}" y="{y + 1}" width="{w:.1f}" height="{_BAR - 2}" '
                f'fill="{shades[n % len(shades)]}"/>'
                f'<text x="{_LEFT + w + 4:.1f}" y="{y + _BAR - 2}" font-size="10">{value}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
