"""Catalogue summary of an ingested dataset: counts the hub may show, small ones suppressed.

How it runs: ingest calls :func:`summarize` on the imaging index rows (or
:func:`summarize_table` on a de-identified clinical table) and :func:`write_summary`
writes ``<dataset path>.summary.json`` — the file the node agent reads
(:meth:`~medfed.node.config.DatasetConfig.summary_path`) and sends to the hub's dataset
entry when it registers. Nothing else leaves the node this way, so the rules are here:

- every count of people or things under ``min_cell_count`` is replaced by the marker
  ``"<k"`` (never a number); categories with no one are not listed;
- sex and age bands split the patients into parts that add up to the patient total, so when
  exactly one part is suppressed the next smallest is hidden too, as ``"suppressed"``
  (otherwise the total minus the others would give the small one away); patients without
  a value count as ``unknown``;
- modalities and body parts count distinct patients (a patient may be in several);
- a patient's sex is the first one recorded, their age the youngest recorded, in bands of
  ``age_band_width`` years top-coded at ``age_top`` (``"90+"``);
- total bytes are a size, not a count, and are given as they are.

:func:`write_summary` re-checks the rules before writing and refuses a summary that
breaks them.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from pandas.api import types as ptypes

from medfed.common.errors import BadRequest, Refused

__all__ = ["summarize", "summarize_table", "summary_path", "write_summary"]

_NOT_COUNTS = frozenset({"bytes", "columns", "min_cell_count", "age_band_width", "age_top"})
UNKNOWN = "unknown"
SECONDARY = "suppressed"  # a count at or above the threshold hidden to protect a small one


def _marker(k: int) -> str:
    return f"<{k}"


def _cell(n: int, k: int) -> int | str:
    return n if n >= k else _marker(k)


def _cells(counts: Mapping[str, int], k: int, *, partition: bool) -> dict[str, int | str]:
    """Counts by category, suppressed; for a partition, secondarily suppressed too."""
    ordered = dict(sorted(counts.items(), key=lambda kv: _order(kv[0])))
    hidden = {name for name, n in ordered.items() if 0 < n < k}
    if partition and len(hidden) == 1 and len(ordered) > 1:
        shown = sorted((n, name) for name, n in ordered.items() if name not in hidden)
        hidden.add(shown[0][1])
    return {
        name: n if name not in hidden else _marker(k) if n < k else SECONDARY
        for name, n in ordered.items()
        if n > 0
    }


def _order(label: str) -> tuple[float, str]:
    """Age bands by their lower bound, other labels alphabetically, ``unknown`` last."""
    if label == UNKNOWN:
        return (math.inf, label)
    digits = ""
    for char in label:
        if not char.isdigit():
            break
        digits += char
    return (float(digits) if digits else math.inf - 1, label)


def _band(age: float, width: int, top: int) -> str:
    if age >= top:
        return f"{top}+"
    low = int(age // width) * width
    return f"{low}-{low + width - 1}"


def _label(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or UNKNOWN


def summarize(
    index_rows: Iterable[Mapping[str, Any]],
    *,
    min_cell_count: int,
    age_band_width: int = 10,
    age_top: int = 90,
) -> dict[str, Any]:
    """The catalogue summary of an imaging dataset from its index rows (see module doc)."""
    k = _threshold(min_cell_count)
    patients: dict[str, dict[str, Any]] = {}
    studies, series, instances = set(), set(), set()
    modalities: dict[str, set[str]] = {}
    body_parts: dict[str, set[str]] = {}
    total_bytes = 0
    for row in index_rows:
        who = _label(row.get("patient_pseudonym"))
        person = patients.setdefault(who, {"sex": None, "age": None})
        sex = _label(row.get("patient_sex"))
        if person["sex"] is None and sex != UNKNOWN:
            person["sex"] = sex
        age = row.get("patient_age")
        if isinstance(age, int | float) and not math.isnan(age):
            person["age"] = age if person["age"] is None else min(person["age"], age)
        studies.add(row.get("study_uid"))
        series.add(row.get("series_uid"))
        instances.add(row.get("sop_instance_uid"))
        modalities.setdefault(_label(row.get("modality")), set()).add(who)
        body_parts.setdefault(_label(row.get("body_part_examined")), set()).add(who)
        size = row.get("file_size")
        total_bytes += int(size) if isinstance(size, int | float) and size == size else 0
    summary: dict[str, Any] = {
        "kind": "imaging",
        "min_cell_count": k,
        "patients": _cell(len(patients), k),
        "studies": _cell(len(studies - {None}), k),
        "series": _cell(len(series - {None}), k),
        "instances": _cell(len(instances - {None}), k),
        "bytes": total_bytes,
        "modalities": _cells({m: len(p) for m, p in modalities.items()}, k, partition=False),
        "body_parts": _cells({b: len(p) for b, p in body_parts.items()}, k, partition=False),
    }
    sexes = Counter(_label(p["sex"]) for p in patients.values())
    if set(sexes) - {UNKNOWN}:
        summary["sex"] = _cells(sexes, k, partition=True)
    ages = Counter(
        UNKNOWN if p["age"] is None else _band(p["age"], age_band_width, age_top)
        for p in patients.values()
    )
    if set(ages) - {UNKNOWN}:
        summary["age_bands"] = _cells(ages, k, partition=True)
        summary["age_band_width"], summary["age_top"] = age_band_width, age_top
    return summary


def summarize_table(
    frame: pd.DataFrame,
    *,
    min_cell_count: int,
    sex_column: str | None = None,
    age_column: str | None = None,
    patient_column: str | None = None,
    age_band_width: int = 10,
    age_top: int = 90,
) -> dict[str, Any]:
    """The catalogue summary of a clinical table: rows (patients), sex, age bands.

    A numeric age column is put in bands; a text one (already generalised, e.g. ``"0-5"``,
    ``"90+"``) is counted by its labels. With ``patient_column`` each patient counts once
    (first row's sex and age); otherwise each row is one patient.
    """
    k = _threshold(min_cell_count)
    for role, name in (("sex", sex_column), ("age", age_column), ("patient", patient_column)):
        if name is not None and name not in frame.columns:
            raise BadRequest(f"summary: {role} column '{name}' is not in the table")
    people = frame
    if patient_column is not None:
        people = frame.drop_duplicates(subset=[patient_column], keep="first")
    summary: dict[str, Any] = {
        "kind": "table",
        "min_cell_count": k,
        "rows": _cell(len(frame), k),
        "columns": len(frame.columns),
    }
    if patient_column is not None:
        summary["patients"] = _cell(len(people), k)
    if sex_column is not None:
        sexes = Counter(_label(v) for v in people[sex_column].tolist())
        summary["sex"] = _cells(sexes, k, partition=True)
    if age_column is not None:
        ages = people[age_column]
        if ptypes.is_numeric_dtype(ages.dtype) and not ptypes.is_bool_dtype(ages.dtype):
            labels = [
                UNKNOWN if pd.isna(a) else _band(float(a), age_band_width, age_top)
                for a in ages.tolist()
            ]
            summary["age_band_width"], summary["age_top"] = age_band_width, age_top
        else:
            labels = [_label(a) for a in ages.tolist()]
        summary["age_bands"] = _cells(Counter(labels), k, partition=True)
    return summary


def _threshold(min_cell_count: int) -> int:
    if isinstance(min_cell_count, bool) or not isinstance(min_cell_count, int):
        raise BadRequest("summary: min_cell_count must be a whole number")
    if min_cell_count < 1:
        raise BadRequest("summary: min_cell_count must be at least 1")
    return min_cell_count


def _check(value: Any, k: int, where: str) -> None:
    """Refuse any count under ``k`` (a number in a place that holds counts)."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if key not in _NOT_COUNTS:
                _check(inner, k, f"{where}.{key}" if where else str(key))
    elif isinstance(value, int) and not isinstance(value, bool) and 0 < value < k:
        raise Refused(f"summary: {where} = {value} is under min_cell_count {k}")


def summary_path(dataset_path: str | os.PathLike[str]) -> Path:
    """``<dataset path>.summary.json``, as :meth:`DatasetConfig.summary_path` expects."""
    path = Path(dataset_path)
    return path.with_name(path.name + ".summary.json")


def write_summary(
    summary: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    exact: bool = False,
) -> Path:
    """Write ``summary`` beside the dataset at ``path``; return the file written.

    The file is ``<path>.summary.json``; ``exact=True`` writes to ``path`` itself (for a
    dataset whose config names its own ``summary`` file).
    """
    k = summary.get("min_cell_count")
    if not isinstance(k, int) or k < 1:
        raise BadRequest("summary: min_cell_count is missing")
    _check(summary, k, "")
    target = Path(path) if exact else summary_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, target)
    return target
