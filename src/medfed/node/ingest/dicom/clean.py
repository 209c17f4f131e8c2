"""Action ``C`` on text: remove what may identify, keep the rest of a descriptor.

How it runs: before the first text is cleaned in a file, :func:`identifying_values`
collects, from the whole source dataset (sequences included), the values of the table's
attributes that the profile does not keep (names, IDs, addresses, dates, institution,
accession numbers, ...). :func:`clean_text` then removes from a descriptor:

- every such value, and every part of a person name or address of three or more
  characters (case-insensitive; words where they stand alone, between characters that
  are not letters or digits; values with digits anywhere);
- dates and date-times in common spellings (``20240131``, ``2024-01-31``, ``31.01.2024``,
  ``1/31/24``), runs of five or more digits (IDs, phone numbers) and e-mail addresses.

What is left has its spaces collapsed; an empty result gives a zero-length value. So
"CT THORAX DOE JOHN 12345678" becomes "CT THORAX" and "Knee MRI" stays as it is.

:func:`scrub_known` removes only the known values; the engine applies it to the text the
profile keeps (attributes the table does not list, such as a Structure Set Label that
repeats the Study ID), so a value removed from its own attribute does not survive in
another one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["clean_text", "identifying_values", "quick_terms", "scrub_known"]

_PATTERNS = re.compile(
    r"""
    \b(?:19|20)\d{2}[-./]?(?:0[1-9]|1[0-2])[-./]?(?:0[1-9]|[12]\d|3[01])(?:\d{2,6})?\b
    | \b\d{1,2}[./-]\d{1,2}[./-]\d{2,4}\b
    | \d{5,}
    | [\w.+-]+@[\w-]+(?:\.[\w-]+)+
    """,
    re.VERBOSE,
)
_SPLIT = re.compile(r"[\^=,;/\\\s]+")
# words too common to be removed from kept text when they are part of an identifying value
_COMMON = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "private",
        "text",
        "name",
        "none",
        "unknown",
        "other",
        "anonymous",
        "anonymized",
        "patient",
        "study",
        "series",
        "image",
        "report",
    ]
)


def identifying_values(values: Iterable[str]) -> re.Pattern[str] | None:
    """One regular expression matching every identifying value or name part given.

    Cached per set of values (the files of one series share theirs): the expression is
    compiled once per series, not once per file.
    """
    return _pattern(tuple(sorted(set(values))))


@lru_cache(maxsize=512)
def _pattern(values: tuple[str, ...]) -> re.Pattern[str] | None:
    words: set[str] = set()
    literals: set[str] = set()
    for value in values:
        value = value.strip()
        if len(value) < 3:
            continue
        (literals if any(c.isdigit() for c in value) else words).add(value)
        for part in _SPLIT.split(value):
            if len(part) >= 3 and part.lower() not in _COMMON:
                (literals if any(c.isdigit() for c in part) else words).add(part)
        if len(value) == 8 and value.isdigit():  # DA: also its usual spellings
            y, m, d = value[:4], value[4:6], value[6:8]
            literals.update({f"{y}-{m}-{d}", f"{d}.{m}.{y}", f"{m}/{d}/{y}", f"{d}/{m}/{y}"})
    if not words and not literals:
        return None
    alternatives = [re.escape(v) for v in sorted(literals, key=len, reverse=True)]
    # a word ends at anything but a letter or digit ("TOSHIBA" in "TOSHIBA_MEC")
    alternatives += [
        rf"(?<![^\W_]){re.escape(w)}(?![^\W_])" for w in sorted(words, key=len, reverse=True)
    ]
    return re.compile("|".join(alternatives), re.IGNORECASE)


def clean_text(text: str, known: re.Pattern[str] | None) -> str:
    """``text`` without the known identifying values and the generic patterns above."""
    if known is not None:
        text = known.sub(" ", text)
    text = _PATTERNS.sub(" ", text)
    return " ".join(text.split())


def scrub_known(text: str, known: re.Pattern[str]) -> str:
    """``text`` without the known identifying values (for text the profile keeps)."""
    if known.search(text) is None:
        return text
    return " ".join(known.sub(" ", text).split())


def quick_terms(values: Iterable[str]) -> tuple[str, ...]:
    """Lower-case values and name parts, for a cheap test before any regular expression."""
    return _terms(tuple(sorted(set(values))))


@lru_cache(maxsize=512)
def _terms(values: tuple[str, ...]) -> tuple[str, ...]:
    terms: set[str] = set()
    for value in values:
        value = value.strip()
        if len(value) < 3:
            continue
        terms.add(value.lower())
        terms.update(
            p.lower() for p in _SPLIT.split(value) if len(p) >= 3 and p.lower() not in _COMMON
        )
    return tuple(sorted(terms))
