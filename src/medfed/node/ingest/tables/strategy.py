"""``strategy.toml``: one de-identification rule per column, and the k-anonymity check.

How it runs: :func:`load_strategy` reads the TOML file, :func:`parse_strategy` validates it
into :class:`Strategy` (pydantic; unknown keys refused) and turns the first validation error
into one :class:`~medfed.common.errors.BadRequest` line that names the column and the rule.
Nothing here touches data; :mod:`.rules` applies the rules and :mod:`.kanon` the check.

Example::

    [columns]
    patient_id = { rule = "pseudonymize", patient = true }   # = DICOM Patient ID pseudonym
    name       = "delete"                      # shorthand for { rule = "delete" }
    sex        = "keep"
    age        = { rule = "generalize", bins = [0, 6, 11, 16], top = 90 }   # 0-5, ..., 90+
    birth      = { rule = "year" }
    visit      = { rule = "date_shift", patient = "patient_id" }
    weight     = { rule = "round", step = 5 }

    [k_anonymity]
    quasi_identifiers = ["age", "sex"]
    k = 11                                     # every group has at least 11 rows (> 10)
    on_violation = "suppress"                  # or "refuse"

    [summary]                                  # optional: which columns the catalogue uses
    sex = "sex"
    age = "age"
    patient = "patient_id"                     # count patients, not rows
"""

from __future__ import annotations

import hashlib
import itertools
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medfed.common.errors import BadRequest

__all__ = [
    "DateShift",
    "Delete",
    "Generalize",
    "KAnonymity",
    "Keep",
    "Pseudonymize",
    "Round",
    "Rule",
    "Strategy",
    "SummaryColumns",
    "Year",
    "load_strategy",
    "parse_strategy",
]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Delete(_Rule):
    """Drop the column from the output."""

    rule: Literal["delete"]


class Keep(_Rule):
    """Copy the column unchanged."""

    rule: Literal["keep"]


class Pseudonymize(_Rule):
    """``prefix`` + the first ``length`` hex digits of a keyed HMAC of the value; with
    ``patient = true`` the DICOM engine's Patient ID pseudonym (links to the imaging index)."""

    rule: Literal["pseudonymize"]
    prefix: str = Field(default="", max_length=32)
    length: int = Field(default=16, ge=8, le=64)
    patient: bool = False

    @model_validator(mode="after")
    def _check(self) -> Pseudonymize:
        if self.patient and (self.prefix or self.length != 16):
            raise ValueError("patient = true uses the DICOM pseudonym; drop prefix and length")
        return self


class Generalize(_Rule):
    """Numeric value → the label of its band ``[edge_i, edge_i+1)``.

    ``top`` codes every value ``>= top`` as ``"<top>+"``; ``bottom`` codes every value
    ``< bottom`` as ``"<<bottom>"``. ``labels`` (optional) name the bands between edges.
    """

    rule: Literal["generalize"]
    bins: list[float] = Field(min_length=1)
    top: float | None = None
    bottom: float | None = None
    labels: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> Generalize:
        if any(not math.isfinite(b) for b in self.bins):
            raise ValueError("bins must be finite numbers")
        if any(b >= c for b, c in zip(self.bins, self.bins[1:], strict=False)):
            raise ValueError("bins must be strictly increasing")
        if self.top is not None and self.top < self.bins[-1]:
            raise ValueError(
                f"top ({_fmt(self.top)}) is below the last bin ({_fmt(self.bins[-1])})"
            )
        if self.bottom is not None and self.bottom > self.bins[0]:
            raise ValueError(
                f"bottom ({_fmt(self.bottom)}) is above the first bin ({_fmt(self.bins[0])})"
            )
        if len(self.edges()) < 2 and self.top is None and self.bottom is None:
            raise ValueError("give at least two bin edges, or top/bottom coding")
        if self.labels is not None and len(self.labels) != len(self.edges()) - 1:
            raise ValueError(
                f"{len(self.labels)} labels for {len(self.edges()) - 1} bands between the edges"
            )
        return self

    def edges(self) -> list[float]:
        """The band edges: ``bins`` with ``bottom`` and ``top`` added where they lie outside."""
        edges = list(self.bins)
        if self.bottom is not None and self.bottom < edges[0]:
            edges.insert(0, self.bottom)
        if self.top is not None and self.top > edges[-1]:
            edges.append(self.top)
        return edges

    def band_labels(self) -> list[str]:
        """Labels of the bands between the edges: ``lo-(hi-1)`` for whole-number edges
        (completed units, like age in years), else ``lo-<hi``."""
        if self.labels is not None:
            return list(self.labels)
        edges = self.edges()
        whole = all(float(e).is_integer() for e in edges)
        out: list[str] = []
        for lo, hi in itertools.pairwise(edges):
            if whole:
                last = int(hi) - 1
                out.append(_fmt(lo) if last == int(lo) else f"{_fmt(lo)}-{last}")
            else:
                out.append(f"{_fmt(lo)}-<{_fmt(hi)}")
        return out

    def top_label(self) -> str | None:
        return None if self.top is None else f"{_fmt(self.top)}+"

    def bottom_label(self) -> str | None:
        return None if self.bottom is None else f"<{_fmt(self.bottom)}"


class Year(_Rule):
    """Date → its year (an integer). ``format``: strptime format; default ISO 8601."""

    rule: Literal["year"]
    format: str | None = None


class DateShift(_Rule):
    """Date + the patient's keyed offset in days, the DICOM engine's (see :mod:`.rules`)."""

    rule: Literal["date_shift"]
    patient: str = Field(min_length=1)
    format: str | None = None


class Round(_Rule):
    """Number → the nearest multiple of ``step``."""

    rule: Literal["round"]
    step: float = Field(gt=0)


Rule = Annotated[
    Delete | Keep | Pseudonymize | Generalize | Year | DateShift | Round,
    Field(discriminator="rule"),
]


class KAnonymity(BaseModel):
    """Every combination of the quasi-identifiers' output values must occur ``>= k`` times.

    "More than 10 per group" is ``k = 11``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    quasi_identifiers: list[str] = Field(min_length=1)
    k: int = Field(ge=2)
    on_violation: Literal["suppress", "refuse"] = "suppress"


class SummaryColumns(BaseModel):
    """The output columns the catalogue summary reads sex, age and patients from (optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sex: str | None = None
    age: str | None = None
    patient: str | None = None  # count each patient once (their first row)


class Strategy(BaseModel):
    """A whole strategy: rules for every column, the k-anonymity check, summary columns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: dict[str, Rule] = Field(min_length=1)
    k_anonymity: KAnonymity
    summary: SummaryColumns = Field(default_factory=SummaryColumns)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """``age = "keep"`` is ``age = { rule = "keep" }``."""
        if isinstance(data, dict) and isinstance(data.get("columns"), dict):
            columns = {
                name: {"rule": rule} if isinstance(rule, str) else rule
                for name, rule in data["columns"].items()
            }
            data = {**data, "columns": columns}
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> Strategy:
        kept = {name for name, rule in self.columns.items() if not isinstance(rule, Delete)}
        for name, rule in self.columns.items():
            if isinstance(rule, DateShift) and rule.patient not in self.columns:
                raise ValueError(
                    f"column '{name}' (date_shift): patient column '{rule.patient}' "
                    "is not in [columns]"
                )
        seen: set[str] = set()
        for qi in self.k_anonymity.quasi_identifiers:
            if qi in seen:
                raise ValueError(f"k_anonymity: quasi-identifier '{qi}' is named twice")
            seen.add(qi)
            if qi not in self.columns:
                raise ValueError(f"k_anonymity: quasi-identifier '{qi}' is not in [columns]")
            if qi not in kept:
                raise ValueError(f"k_anonymity: quasi-identifier '{qi}' is deleted by its rule")
        summary = self.summary
        for role, column in (
            ("sex", summary.sex),
            ("age", summary.age),
            ("patient", summary.patient),
        ):
            if column is not None and column not in kept:
                raise ValueError(f"summary: {role} column '{column}' is not a kept column")
        return self

    def output_columns(self) -> list[str]:
        """The columns the output has, in strategy order."""
        return [name for name, rule in self.columns.items() if not isinstance(rule, Delete)]

    def string_columns(self) -> list[str]:
        """Columns read as text (identifiers keep leading zeros): pseudonymized and
        date-shift patient columns."""
        names = {n for n, r in self.columns.items() if isinstance(r, Pseudonymize)}
        names |= {r.patient for r in self.columns.values() if isinstance(r, DateShift)}
        return sorted(names)

    def sha256(self) -> str:
        """Fingerprint of the strategy (canonical JSON), for reports and manifests."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _where(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] == "columns":
        # ("columns", name, rule-tag, field...) → column 'name' (rule): field
        rest = parts[3:] if len(parts) >= 3 else []
        tag = f" ({parts[2]})" if len(parts) >= 3 else ""
        return f"column '{parts[1]}'{tag}" + (f": {'.'.join(rest)}" if rest else "")
    return ".".join(parts)


def parse_strategy(raw: dict[str, Any], *, source: str = "strategy") -> Strategy:
    """Validate a parsed TOML document; the first problem becomes one BadRequest line."""
    try:
        return Strategy.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _where(tuple(first["loc"]))
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "union_tag_invalid":
            message = (
                "unknown rule; use one of delete, keep, pseudonymize, generalize, year, "
                "date_shift, round"
            )
        elif first["type"] == "union_tag_not_found":
            message = "missing 'rule'"
        raise BadRequest(f"{source}: {where + ': ' if where else ''}{message}") from None


def load_strategy(path: Path) -> Strategy:
    """Read and validate ``strategy.toml``."""
    try:
        raw: dict[str, Any] = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise BadRequest(f"cannot read strategy {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadRequest(f"strategy {path} is not valid TOML: {exc}") from None
    return parse_strategy(raw, source=Path(path).name)
