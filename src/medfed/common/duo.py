"""GA4GH Data Use Ontology (DUO): the vocabulary and the matching of an intended use.

A dataset carries its data-use conditions as DUO codes: one or more *permissions* (what
research the data may be used for: ``NRES``, ``GRU``, ``HMB``, ``DS:<disease>``, ``POA``)
and *modifiers* (extra conditions: ``NCU``, ``IRB``, ``COL``, ``TS:<months>``, …). A code is
written by its shorthand (case-insensitive) or its DUO id (``DUO:0000006``); a parameter
follows a colon (``DS:breast cancer``, ``DUO:0000007:breast cancer``, ``TS:12``).
:func:`validate_codes` turns such a list into canonical shorthand (``HMB``, ``DS:breast
cancer``) or raises :class:`~medfed.common.errors.BadRequest` naming the bad code.

An access application states its intended use as an :class:`IntendedUse`: purpose codes
(the same permission codes: what the research *is*) and the facts the modifiers ask about
(commercial use, ethics approval reference, collaboration statement, …). :func:`match`
compares the two and returns human-readable mismatches, which the hub shows to the data
access committee; it decides nothing by itself. Conditions a machine cannot judge
(geographic, institution, user or project limits, a publication moratorium) come back as
``"check: …"`` lines so the committee sees them too.

Ids and labels follow the DUO release on https://github.com/EBISPOT/DUO (``duo.csv``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from medfed.common.errors import BadRequest

__all__ = [
    "PERMISSIONS",
    "TERMS",
    "DuoTerm",
    "IntendedUse",
    "known_codes",
    "label",
    "match",
    "validate_codes",
]


@dataclass(frozen=True)
class DuoTerm:
    code: str
    id: str
    label: str
    kind: Literal["permission", "modifier"]
    param: Literal["required", "optional", "none"] = "none"


_TERMS: tuple[DuoTerm, ...] = (
    DuoTerm("NRES", "DUO:0000004", "no restriction", "permission"),
    DuoTerm("GRU", "DUO:0000042", "general research use", "permission"),
    DuoTerm("HMB", "DUO:0000006", "health or medical or biomedical research", "permission"),
    DuoTerm("DS", "DUO:0000007", "disease specific research", "permission", "required"),
    DuoTerm("POA", "DUO:0000011", "population origins or ancestry research only", "permission"),
    DuoTerm("CC", "DUO:0000043", "clinical care use", "modifier"),
    DuoTerm("GSO", "DUO:0000016", "genetic studies only", "modifier"),
    DuoTerm("NMDS", "DUO:0000015", "no general methods research", "modifier"),
    DuoTerm("NCU", "DUO:0000046", "non-commercial use only", "modifier"),
    DuoTerm("NPU", "DUO:0000045", "not for profit organisation use only", "modifier"),
    DuoTerm("NPUNCU", "DUO:0000018", "not for profit, non commercial use only", "modifier"),
    DuoTerm(
        "NPOA", "DUO:0000044", "population origins or ancestry research prohibited", "modifier"
    ),
    DuoTerm("IRB", "DUO:0000021", "ethics approval required", "modifier"),
    DuoTerm("PUB", "DUO:0000019", "publication required", "modifier"),
    DuoTerm("COL", "DUO:0000020", "collaboration required", "modifier"),
    DuoTerm("RTN", "DUO:0000029", "return to database or resource", "modifier"),
    DuoTerm("TS", "DUO:0000025", "time limit on use", "modifier", "optional"),
    DuoTerm("MOR", "DUO:0000024", "publication moratorium", "modifier", "optional"),
    DuoTerm("RS", "DUO:0000012", "research specific restrictions", "modifier", "optional"),
    DuoTerm("GS", "DUO:0000022", "geographical restriction", "modifier", "optional"),
    DuoTerm("IS", "DUO:0000028", "institution specific restriction", "modifier", "optional"),
    DuoTerm("US", "DUO:0000026", "user specific restriction", "modifier", "optional"),
    DuoTerm("PS", "DUO:0000027", "project specific restriction", "modifier", "optional"),
)

TERMS: dict[str, DuoTerm] = {term.code: term for term in _TERMS}
_BY_ID: dict[str, DuoTerm] = {term.id: term for term in _TERMS}
PERMISSIONS = frozenset(term.code for term in _TERMS if term.kind == "permission")
_DUO_ID = re.compile(r"^DUO:\d{7}", re.IGNORECASE)
_MAX_PARAM = 200


def known_codes() -> list[str]:
    """Every shorthand this module knows, permissions first."""
    return [t.code for t in _TERMS if t.kind == "permission"] + [
        t.code for t in _TERMS if t.kind == "modifier"
    ]


def label(code: str) -> str:
    """``"HMB (DUO:0000006, health or medical or biomedical research)"`` for a canonical code."""
    base, _, param = code.partition(":")
    term = TERMS[base]
    suffix = f": {param}" if param else ""
    return f"{term.code}{suffix} ({term.id}, {term.label})"


def _canonical(raw: str) -> str:
    text = raw.strip()
    if not text:
        raise BadRequest("empty DUO code")
    id_match = _DUO_ID.match(text)
    if id_match:
        term = _BY_ID.get(id_match.group(0).upper())
        if term is None:
            raise BadRequest(f"unknown DUO code {text!r}; known: {', '.join(known_codes())}")
        rest = text[id_match.end() :]
        if rest and not rest.startswith(":"):
            raise BadRequest(f"malformed DUO code {text!r}")
        param = rest[1:].strip()
    else:
        base, _, param = text.partition(":")
        term = TERMS.get(base.strip().upper())
        if term is None:
            raise BadRequest(f"unknown DUO code {text!r}; known: {', '.join(known_codes())}")
        param = param.strip()
    if term.param == "required" and not param:
        raise BadRequest(f"DUO code {term.code} needs a parameter, e.g. '{term.code}:<disease>'")
    if term.param == "none" and param:
        raise BadRequest(f"DUO code {term.code} takes no parameter (got {text!r})")
    if len(param) > _MAX_PARAM:
        raise BadRequest(f"DUO code parameter longer than {_MAX_PARAM} characters: {text[:40]!r}")
    if term.code == "TS" and param and not (param.isdigit() and int(param) > 0):
        raise BadRequest(f"DUO code TS takes a number of months (got {text!r})")
    if term.code == "MOR" and param:
        try:
            date.fromisoformat(param)
        except ValueError as exc:
            raise BadRequest(f"DUO code MOR takes an ISO date (got {text!r})") from exc
    return f"{term.code}:{param}" if param else term.code


def validate_codes(codes: Iterable[str]) -> list[str]:
    """Canonical shorthand for ``codes``, duplicates dropped, order kept; BadRequest if unknown."""
    out: list[str] = []
    for raw in codes:
        if not isinstance(raw, str):
            raise BadRequest(f"a DUO code must be a string (got {raw!r})")
        code = _canonical(raw)
        if code not in out:
            out.append(code)
    return out


@dataclass(frozen=True)
class IntendedUse:
    """What an applicant says the data will be used for (the facts DUO modifiers ask about).

    ``codes`` are purpose codes (``GRU``, ``HMB``, ``DS:<disease>``, ``POA``, plus ``CC`` for
    clinical care use); the flags and texts answer the modifiers.
    """

    codes: Sequence[str] = ()
    commercial: bool = False
    for_profit_organization: bool = False
    methods_development: bool = False
    genetic: bool = False
    ethics_reference: str = ""
    collaboration_statement: str = ""
    will_publish: bool = True
    will_return_derived_data: bool = False
    duration_days: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _disease(code: str) -> str:
    return " ".join(code.partition(":")[2].lower().split())


def _covers(permission: str, purpose: str) -> bool:
    """Whether a dataset permission allows one intended purpose."""
    base = permission.partition(":")[0]
    p_base = purpose.partition(":")[0]
    if base == "NRES":
        return True
    if base == "GRU":
        return p_base in ("GRU", "HMB", "DS", "POA")
    if base == "HMB":
        return p_base in ("HMB", "DS")
    if base == "DS":
        return p_base == "DS" and _disease(permission) == _disease(purpose)
    if base == "POA":
        return p_base == "POA"
    return False


def _purpose_mismatches(dataset: list[str], purposes: list[str]) -> list[str]:
    permissions = [c for c in dataset if c.partition(":")[0] in PERMISSIONS]
    if not permissions:
        return []
    out: list[str] = []
    if not purposes:
        out.append("the intended use names no purpose code (GRU, HMB, DS:<disease>, POA)")
    for purpose in purposes:
        if not any(_covers(p, purpose) for p in permissions):
            allowed = ", ".join(label(p) for p in permissions)
            out.append(f"intended use {label(purpose)} is not allowed by the dataset's {allowed}")
    return out


def _modifier_problem(base: str, param: str, use: IntendedUse, bases: set[str]) -> str | None:
    """What a dataset modifier objects to in ``use`` (``None``: nothing)."""
    if base == "NPOA" and "POA" in bases:
        return "the intended use is population origins or ancestry research"
    if base == "NCU" and use.commercial:
        return "the intended use is commercial"
    if base == "NPU" and use.for_profit_organization:
        return "the applicant is a for-profit organisation"
    if base == "NPUNCU" and (use.commercial or use.for_profit_organization):
        return "the intended use is commercial or by a for-profit organisation"
    if base == "IRB" and not use.ethics_reference.strip():
        return "no ethics approval reference given"
    if base == "COL" and not use.collaboration_statement.strip():
        return "no collaboration statement given"
    if base == "PUB" and not use.will_publish:
        return "the applicant does not agree to publish results"
    if base == "RTN" and not use.will_return_derived_data:
        return "the applicant does not agree to return derived data"
    if base == "NMDS" and use.methods_development:
        return "the intended use is methods development"
    if base == "GSO" and not use.genetic:
        return "the intended use is not a genetic study"
    limit_days = int(param) * 31 if base == "TS" and param else None
    if limit_days is not None and use.duration_days is not None and use.duration_days > limit_days:
        return f"{use.duration_days} days asked for, the limit is {param} months"
    return None


_JUDGEMENT = ("MOR", "RS", "GS", "IS", "US", "PS")


def _modifier_mismatches(dataset: list[str], use: IntendedUse, bases: set[str]) -> list[str]:
    out: list[str] = []
    for code in dataset:
        base, _, param = code.partition(":")
        if base in PERMISSIONS:
            continue
        problem = _modifier_problem(base, param, use, bases)
        if problem is not None:
            out.append(f"{label(code)}: {problem}")
        elif base in _JUDGEMENT:
            out.append(f"check: {label(code)}")
    if "CC" in bases and not any(c.partition(":")[0] in ("CC", "NRES") for c in dataset):
        out.append("intended clinical care use (CC) is not allowed: the dataset has no CC code")
    return out


def match(dataset_codes: Iterable[str], intended_use: IntendedUse) -> list[str]:
    """Human-readable mismatches between a dataset's DUO codes and an intended use.

    An empty list means nothing to flag. Both sides are validated first (BadRequest on an
    unknown code); a dataset with no codes states no conditions and flags nothing.
    """
    dataset = validate_codes(dataset_codes)
    purposes = [c for c in validate_codes(intended_use.codes) if c != "CC"]
    if any(p.partition(":")[0] not in PERMISSIONS for p in purposes):
        bad = [p for p in purposes if p.partition(":")[0] not in PERMISSIONS]
        raise BadRequest(f"intended-use codes must be purposes (GRU, HMB, DS, POA, CC): {bad}")
    if not dataset:
        return []
    bases = {c.partition(":")[0] for c in validate_codes(intended_use.codes)}
    return _purpose_mismatches(dataset, purposes) + _modifier_mismatches(
        dataset, intended_use, bases
    )
