"""The PS3.15 Annex E table, loaded from the vendored copy, and the action per tag it gives.

How it runs: :func:`load_table` reads ``data/confidentiality_profile_attributes.json`` once
per process. :func:`build_profile` turns a set of options into a :class:`Profile`: for every
row of the table, the option columns of the chosen options override the Basic Profile
action where they have a value (when two chosen options disagree on a row, ``K`` wins over
``C``, which wins over the rest: a retain option asked for explicitly is honoured). The
result keeps the table's codes, combined ones (``X/Z``, ``X/D``, ``Z/D``, ``X/Z/D``,
``X/Z/U*``) included; :func:`resolve` picks the one action among them from the
attribute's Type in the IOD (see :mod:`.iodtypes`): the strongest action that keeps the
IOD valid (Type 3 → X, Type 2 → Z, Type 1 → D, or U for ``X/Z/U*``).

Tags in the table are exact (``(0008,0050)``), masks over repeating groups
(``(50XX,XXXX)``, ``(60XX,3000)``) or the private-attribute row
(``(GGGG,EEEE) WHERE GGGG IS ODD``). :meth:`Profile.code_for` answers for any tag.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from typing import Any

from medfed.common.errors import BadRequest

__all__ = [
    "OPTION_CODES",
    "OPTION_COLUMNS",
    "Option",
    "Profile",
    "TableRow",
    "build_profile",
    "load_table",
    "parse_options",
    "resolve",
]


class Option(StrEnum):
    """The profile options, spelled as the CLI flags ``--option NAME``."""

    RETAIN_FULL_DATES = "retain-full-dates"
    RETAIN_MODIFIED_DATES = "retain-modified-dates"
    RETAIN_PATIENT_CHARACTERISTICS = "retain-patient-characteristics"
    RETAIN_DEVICE_IDENTITY = "retain-device-identity"
    RETAIN_INSTITUTION_IDENTITY = "retain-institution-identity"
    RETAIN_UIDS = "retain-uids"
    RETAIN_SAFE_PRIVATE = "retain-safe-private"
    CLEAN_DESCRIPTORS = "clean-descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean-structured-content"
    CLEAN_GRAPHICS = "clean-graphics"


OPTION_COLUMNS: dict[Option, str] = {
    Option.RETAIN_FULL_DATES: "rtnLongFullDatesOpt",
    Option.RETAIN_MODIFIED_DATES: "rtnLongModifDatesOpt",
    Option.RETAIN_PATIENT_CHARACTERISTICS: "rtnPatCharsOpt",
    Option.RETAIN_DEVICE_IDENTITY: "rtnDevIdOpt",
    Option.RETAIN_INSTITUTION_IDENTITY: "rtnInstIdOpt",
    Option.RETAIN_UIDS: "rtnUIDsOpt",
    Option.RETAIN_SAFE_PRIVATE: "rtnSafePrivOpt",
    Option.CLEAN_DESCRIPTORS: "cleanDescOpt",
    Option.CLEAN_STRUCTURED_CONTENT: "cleanStructContOpt",
    Option.CLEAN_GRAPHICS: "cleanGraphOpt",
}

# CID 7050 "De-identification Method" codes (scheme DCM).
BASIC_CODE = ("113100", "Basic Application Confidentiality Profile")
CLEAN_PIXEL_CODE = ("113101", "Clean Pixel Data Option")
OPTION_CODES: dict[Option, tuple[str, str]] = {
    Option.CLEAN_GRAPHICS: ("113103", "Clean Graphics Option"),
    Option.CLEAN_STRUCTURED_CONTENT: ("113104", "Clean Structured Content Option"),
    Option.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    Option.RETAIN_FULL_DATES: (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    Option.RETAIN_MODIFIED_DATES: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    Option.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    Option.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    Option.RETAIN_UIDS: ("113110", "Retain UIDs Option"),
    Option.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    Option.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity Option"),
}

PRIVATE_ROW = "(GGGG,EEEE) WHERE GGGG IS ODD"
_PRECEDENCE = {"K": 0, "C": 1}


@dataclass(frozen=True)
class TableRow:
    """One row of Table E.1-1 as vendored."""

    name: str
    tag: str
    basic: str
    options: dict[str, str] = field(hash=False, compare=False)

    @property
    def is_private(self) -> bool:
        return self.tag == PRIVATE_ROW

    @property
    def is_mask(self) -> bool:
        return not self.is_private and "X" in self.tag

    def exact(self) -> int:
        """The tag as an int (exact rows only)."""
        return int(self.tag[1:5] + self.tag[6:10], 16)

    def mask(self) -> tuple[int, int]:
        """(mask, value) such that ``tag & mask == value`` for the tags the row covers."""
        digits = (self.tag[1:5] + self.tag[6:10]).upper()
        mask = int("".join("0" if c == "X" else "F" for c in digits), 16)
        value = int("".join("0" if c == "X" else c for c in digits), 16)
        return mask, value

    def action(self, options: Iterable[Option]) -> str:
        """The row's code with the chosen options applied (may be a combined code)."""
        given = [
            self.options[OPTION_COLUMNS[o]] for o in options if OPTION_COLUMNS[o] in self.options
        ]
        if not given:
            return self.basic
        return min(given, key=lambda code: _PRECEDENCE.get(code, 2))


@lru_cache(maxsize=1)
def load_table() -> tuple[TableRow, ...]:
    """All rows of the vendored table; a tag listed twice keeps its combined code."""
    text = resources.files(__package__).joinpath("data", "confidentiality_profile_attributes.json")
    raw: list[dict[str, Any]] = json.loads(text.read_text(encoding="utf-8"))
    rows: dict[str, TableRow] = {}
    for entry in raw:
        tag = str(entry["tag"]).upper() if entry["tag"] != PRIVATE_ROW else PRIVATE_ROW
        row = TableRow(
            name=str(entry["name"]),
            tag=tag,
            basic=str(entry["basicProfile"]),
            options={k: str(v) for k, v in entry.items() if k.endswith("Opt") and v},
        )
        previous = rows.get(tag)
        # (3008,0105) is listed as X/Z and as X: X/Z covers X (Type 3) and Z (Type 2).
        if previous is None or ("/" in row.basic and "/" not in previous.basic):
            rows[tag] = row
    return tuple(rows.values())


def parse_options(names: Iterable[str | Option]) -> frozenset[Option]:
    """Option names (CLI spelling) to options; refuse unknown names and conflicts."""
    chosen: set[Option] = set()
    for name in names:
        try:
            chosen.add(Option(str(name).strip().lower()))
        except ValueError:
            known = ", ".join(o.value for o in Option)
            raise BadRequest(f"unknown de-identification option {name!r}; known: {known}") from None
    if {Option.RETAIN_FULL_DATES, Option.RETAIN_MODIFIED_DATES} <= chosen:
        raise BadRequest("retain-full-dates and retain-modified-dates exclude each other")
    return frozenset(chosen)


@dataclass(frozen=True)
class Profile:
    """The table's action code per tag for one set of options."""

    options: frozenset[Option]
    exact: dict[int, str]
    masks: tuple[tuple[int, int, str], ...]
    private: str

    def code_for(self, tag: int) -> str | None:
        """The table's (possibly combined) code for ``tag``, or None if it is not listed."""
        code = self.exact.get(tag)
        if code is not None:
            return code
        if (tag >> 16) & 1:
            return self.private
        for mask, value, masked in self.masks:
            if tag & mask == value:
                return masked
        return None

    def has(self, option: Option) -> bool:
        return option in self.options


@lru_cache(maxsize=64)
def build_profile(options: frozenset[Option] = frozenset()) -> Profile:
    exact: dict[int, str] = {}
    masks: list[tuple[int, int, str]] = []
    private = "X"
    for row in load_table():
        code = row.action(sorted(options))
        if row.is_private:
            private = code
        elif row.is_mask:
            mask, value = row.mask()
            masks.append((mask, value, code))
        else:
            exact[row.exact()] = code
    return Profile(options=options, exact=exact, masks=tuple(masks), private=private)


def resolve(code: str, iod_type: int) -> str:
    """One action out of a combined code, given the attribute's Type (1, 2 or 3).

    The strongest action that keeps the IOD valid: Type 3 → X if allowed; Type 2 → Z if
    allowed, else D; Type 1 → U (``X/Z/U*``) or D, else Z. A single code is returned as is.
    """
    if "/" not in code:
        return code
    letters = code.replace("*", "").split("/")
    prefer = {1: "UDZX", 2: "ZDUX", 3: "XZDU"}[iod_type]
    return next(letter for letter in prefer if letter in letters)
