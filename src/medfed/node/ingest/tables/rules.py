"""Apply a :class:`~.strategy.Strategy`'s column rules to a pandas frame.

How it runs: :func:`apply_rules` first checks that the frame's columns and the strategy's
columns are the same set (an unnamed column is refused, never silently kept), then
computes each output column from the *original* frame, column by column, and returns a
new frame (the input is never changed) plus a :class:`ColumnReport` per column. Keyed
values are computed once per distinct input value.

Keys (all from the node secret via :func:`medfed.node.ingest.keys.derive_key`):

- pseudonym: ``prefix + hmac_hex(derive_key(secret, "pseudonym"), value)[:length]``;
  the same value gives the same pseudonym in every column, table and run on one node.
  With ``patient = true`` the DICOM engine's Patient ID pseudonym instead:
  ``"P" + hmac_hex(derive_key(secret, "patient-pseudonym"), "patient", id)[:16].upper()``,
  so a table's patients link to the imaging index;
- date shift: the DICOM engine's own offset, :func:`medfed.node.ingest.dicom.dates.
  patient_offset` with ``derive_key(secret, "date-offset")``: ``n = int(hmac_hex(key,
  "date-offset", id)[:12], 16) % 730``, offset ``n - 365`` if ``n < 365`` else ``n - 364``
  days — from -365 to 365, never 0, one offset per patient, the same for the
  patient's table rows and images.

A value is turned into text before keying: strings as they are, whole floats without the
``.0`` (``123.0`` → ``"123"``), everything else with ``str``; patient ids (the two
DICOM-compatible derivations) are also stripped of surrounding spaces, as DICOM does.
Nulls stay null.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from pydantic import BaseModel, Field

from medfed.common.errors import BadRequest
from medfed.node.ingest.dicom.dates import patient_offset
from medfed.node.ingest.keys import derive_key, hmac_hex
from medfed.node.ingest.tables.strategy import (
    DateShift,
    Delete,
    Generalize,
    Keep,
    Pseudonymize,
    Round,
    Strategy,
    Year,
)

__all__ = [
    "DATE_SHIFT_PURPOSE",
    "PATIENT_PURPOSE",
    "PSEUDONYM_PURPOSE",
    "ColumnReport",
    "apply_rules",
    "check_columns",
    "date_offset_days",
    "patient_pseudonym",
    "pseudonym",
]

PSEUDONYM_PURPOSE = "pseudonym"
PATIENT_PURPOSE = "patient-pseudonym"  # = the DICOM engine's (dicom/deid.py)
DATE_SHIFT_PURPOSE = "date-offset"  # = the DICOM engine's (dicom/deid.py)


class ColumnReport(BaseModel):
    """What one rule did to one column (counts only, never values)."""

    rule: str
    kept: bool
    nulls: int = Field(description="null values in the output column")
    counts: dict[str, int] = Field(default_factory=dict)


def key_text(value: Any) -> str:
    """The text a value is keyed as (see the module docstring)."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def pseudonym(key: bytes, value: Any, *, prefix: str = "", length: int = 16) -> str:
    """Keyed pseudonym of one value."""
    return prefix + hmac_hex(key, key_text(value))[:length]


def patient_pseudonym(key: bytes, patient_id: Any) -> str:
    """The DICOM engine's pseudonym of a Patient ID (key: purpose ``patient-pseudonym``)."""
    return "P" + hmac_hex(key, "patient", key_text(patient_id).strip())[:16].upper()


def date_offset_days(key: bytes, patient_id: Any) -> int:
    """The DICOM engine's per-patient offset in days (key: purpose ``date-offset``)."""
    return patient_offset(key, key_text(patient_id).strip())


def check_columns(columns: list[str], strategy: Strategy) -> None:
    """Refuse data columns the strategy does not name, and strategy columns not in the data."""
    present = set(columns)
    unnamed = [c for c in columns if c not in strategy.columns]
    if unnamed:
        raise BadRequest(
            f"columns not named in the strategy: {', '.join(map(repr, unnamed))} "
            '(give each a rule, e.g. "delete" or "keep")'
        )
    missing = [c for c in strategy.columns if c not in present]
    if missing:
        raise BadRequest(f"strategy columns missing from the data: {', '.join(map(repr, missing))}")
    dup = pd.Index(columns)[pd.Index(columns).duplicated()]
    if len(dup):
        raise BadRequest(f"duplicate column '{dup[0]}' in the data")


def _first_bad_row(mask: pd.Series) -> int:
    return int(np.flatnonzero(mask.to_numpy())[0]) + 1


def _numbers(series: pd.Series, where: str) -> pd.Series:
    if ptypes.is_bool_dtype(series.dtype):
        raise BadRequest(f"{where}: the column holds booleans, not numbers")
    numbers = pd.to_numeric(series, errors="coerce").astype("float64")
    bad = numbers.isna() & series.notna()
    if bad.any():
        raise BadRequest(
            f"{where}: {int(bad.sum())} values are not numbers (first in data row "
            f"{_first_bad_row(bad)})"
        )
    return numbers


def _dates(series: pd.Series, fmt: str | None, where: str) -> pd.Series:
    if ptypes.is_datetime64_any_dtype(series.dtype):
        return series
    text = series.map(lambda v: None if pd.isna(v) else str(v))
    dates = pd.to_datetime(text, format=fmt or "ISO8601", errors="coerce")
    bad = dates.isna() & series.notna()
    if bad.any():
        expected = f"format {fmt!r}" if fmt else "ISO 8601 (YYYY-MM-DD), or set format"
        raise BadRequest(
            f"{where}: {int(bad.sum())} values are not dates in {expected} (first in data "
            f"row {_first_bad_row(bad)})"
        )
    return dates


def _keyed(series: pd.Series, fn: Callable[[Any], Any]) -> pd.Series:
    cache: dict[Any, Any] = {}

    def one(value: Any) -> Any:
        if pd.isna(value):
            return None
        if value not in cache:
            cache[value] = fn(value)
        return cache[value]

    return series.map(one)


def _generalize(
    series: pd.Series, rule: Generalize, where: str
) -> tuple[pd.Series, dict[str, int]]:
    values = _numbers(series, where)
    edges = rule.edges()
    below = values < (rule.bottom if rule.bottom is not None else edges[0])
    above = values >= (rule.top if rule.top is not None else edges[-1])
    if rule.bottom is None and below.any():
        raise BadRequest(
            f"{where}: {int(below.sum())} values lie below the first bin edge "
            f"{edges[0]:g} (add a lower edge or bottom coding)"
        )
    if rule.top is None and above.any():
        raise BadRequest(
            f"{where}: {int(above.sum())} values lie at or above the last bin edge "
            f"{edges[-1]:g} (add an upper edge or top coding)"
        )
    labels = np.array(rule.band_labels() or [""], dtype=object)
    index = np.clip(
        np.searchsorted(np.asarray(edges), values.to_numpy(), side="right") - 1, 0, None
    )
    index = np.minimum(index, len(labels) - 1)
    out = pd.Series(labels[index], index=series.index, dtype=object)
    if rule.top is not None:
        out[above] = rule.top_label()
    if rule.bottom is not None:
        out[below] = rule.bottom_label()
    out[values.isna()] = None
    return out, {"top_coded": int(above.sum()), "bottom_coded": int(below.sum())}


def _round(series: pd.Series, rule: Round, where: str) -> pd.Series:
    values = _numbers(series, where)
    rounded = ((values / rule.step).round() * rule.step).round(10)
    whole = rounded.dropna()
    if float(rule.step).is_integer() and bool((whole == whole.round()).all()):
        return rounded.astype("Int64")
    return rounded


def apply_rules(
    frame: pd.DataFrame, strategy: Strategy, *, secret: str
) -> tuple[pd.DataFrame, dict[str, ColumnReport]]:
    """The de-identified frame (kept columns in the data's order) and a report per column."""
    check_columns([str(c) for c in frame.columns], strategy)
    pseudo_key = derive_key(secret, PSEUDONYM_PURPOSE)
    patient_key = derive_key(secret, PATIENT_PURPOSE)
    shift_key = derive_key(secret, DATE_SHIFT_PURPOSE)
    out: dict[str, pd.Series] = {}
    reports: dict[str, ColumnReport] = {}
    for name in frame.columns:
        rule = strategy.columns[str(name)]
        where = f"column '{name}' ({rule.rule})"
        series = frame[name]
        counts: dict[str, int] = {}
        if isinstance(rule, Delete):
            reports[name] = ColumnReport(rule=rule.rule, kept=False, nulls=0)
            continue
        if isinstance(rule, Keep):
            result = series.copy()
        elif isinstance(rule, Pseudonymize):
            keyed = (
                partial(patient_pseudonym, patient_key)
                if rule.patient
                else partial(pseudonym, pseudo_key, prefix=rule.prefix, length=rule.length)
            )
            result = _keyed(series, keyed).astype(object)
            counts["distinct"] = int(result.nunique())
        elif isinstance(rule, Generalize):
            result, counts = _generalize(series, rule, where)
        elif isinstance(rule, Year):
            result = _dates(series, rule.format, where).dt.year.astype("Int64")
        elif isinstance(rule, DateShift):
            dates = _dates(series, rule.format, where)
            offsets = _keyed(frame[rule.patient], lambda v: date_offset_days(shift_key, v))
            no_patient = offsets.isna() & dates.notna()
            days = pd.to_numeric(offsets, errors="coerce").astype("float64")
            result = dates + pd.to_timedelta(days, unit="D")
            counts["removed_without_patient"] = int(no_patient.sum())
        elif isinstance(rule, Round):
            result = _round(series, rule, where)
        else:  # pragma: no cover - the Rule union is closed
            raise BadRequest(f"{where}: unsupported rule")
        out[name] = result
        reports[name] = ColumnReport(
            rule=rule.rule, kept=True, nulls=int(result.isna().sum()), counts=counts
        )
    result_frame = pd.DataFrame(out, index=frame.index)
    return result_frame.reset_index(drop=True), reports
