"""What the task pages show, gathered from the same services as the API: no second logic.

* :func:`run_form_context` — the run-an-analysis form of one algorithm, its column
  pickers filled with the columns every chosen dataset has;
* :func:`dataset_labels` — a task's datasets by name ("gbsg2 at hospital-a, v2");
* :func:`param_rows` — the parameters as name and value, the filter in its text form, a
  saved cohort as its name, version and short hash linked to its page
  (:func:`cohort_text`) rather than its whole stored definition;
* :func:`node_rows` — one row per node and dataset with its rounds folded (how many, how
  they ended), each round's status behind a ``<details>``; the run statuses and errors
  are exactly what ``GET /api/tasks/{id}`` shows — never whether a node withheld its
  answer (``output_status`` stays hidden; the task's counts say how many did);
* :func:`plot_png` — the PNG of a result's own ``plot(path)`` (the same code the CLI and
  SDK call), drawn into a temporary file under a lock (pyplot keeps global state).
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup
from sqlalchemy.orm import Session

from medfed.algorithms.registry import algorithm_names, get_algorithm
from medfed.common.resources import NodeRunStatus
from medfed.common.schemas import ColumnSchema
from medfed.hub.db.models import Dataset
from medfed.hub.services import datasets as dataset_service
from medfed.hub.web.param_form import run_form
from medfed.hub.web.result_tables import format_value

__all__ = [
    "DEFAULT_ALGORITHM",
    "NodeRow",
    "cohort_text",
    "dataset_labels",
    "filter_text",
    "node_rows",
    "param_rows",
    "plot_png",
    "run_form_context",
]

log = logging.getLogger(__name__)
_PLOT_LOCK = threading.Lock()
DEFAULT_ALGORITHM = "count"


def common_columns(datasets: Sequence[Dataset]) -> list[ColumnSchema]:
    """The columns every dataset has (in the first one's order); all of them if none is."""
    schemas = [dataset_service.schema_of(d).columns for d in datasets]
    if not schemas:
        return []
    shared = [c for c in schemas[0] if all(c in other for other in schemas[1:])]
    if shared:
        return shared
    union: list[ColumnSchema] = []
    for columns in schemas:
        union.extend(c for c in columns if c not in union)
    return union


def run_form_context(
    datasets: Sequence[Dataset],
    algorithm: str | None,
    chosen: Sequence[int] | None = None,
    submitted: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The form's values: the algorithms, the datasets ticked and the generated fields."""
    names = algorithm_names()
    name = algorithm if algorithm in names else DEFAULT_ALGORITHM
    ticked = [d for d in datasets if chosen is None or d.id in chosen]
    return {
        "algorithm_choices": [(n, get_algorithm(n).summary) for n in names],
        "chosen_datasets": {d.id for d in ticked},
        "form": run_form(get_algorithm(name), common_columns(ticked or datasets), submitted),
    }


def dataset_labels(session: Session, ids: Sequence[int]) -> dict[int, str]:
    """``{id: "name at node, v2"}`` for the datasets that exist (ids otherwise)."""
    labels = {}
    for dataset_id in ids:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            labels[dataset_id] = f"dataset #{dataset_id}"
            continue
        version = f", v{dataset.version}" if dataset.version > 1 else ""
        labels[dataset_id] = f"{dataset.name} at {dataset.node.name}{version}"
    return labels


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "(" + ", ".join(_value_text(v) for v in value) + ")"
    return str(value)


def filter_text(raw: Any, top: bool = True) -> str:
    """A filter's JSON form in the CLI's text syntax (``age > 50 and horTh == 'yes'``)."""
    if not isinstance(raw, dict):
        return str(raw)
    for word in ("and", "or"):
        if isinstance(raw.get(word), list):
            text = f" {word} ".join(filter_text(item, False) for item in raw[word])
            return text if top else f"({text})"
    column, op = raw.get("column"), raw.get("op")
    if op in ("is null", "is not null"):
        return f"{column} {op}"
    return f"{column} {op} {_value_text(raw.get('value'))}"


def cohort_text(cohort: Mapping[str, Any]) -> str:
    """A task's saved cohort as its name, version and short hash, linked to its page.

    Markup (every part escaped): the page shows a link where the stored definition would
    be one long line of JSON. A task stored before cohorts carried their name reads
    "cohort N".
    """
    ident, version = int(cohort["id"]), int(cohort["version"])
    name = cohort.get("name") or f"cohort {ident}"
    return Markup('<a class="cohort-link" href="/cohorts/{}?version={}">{}</a> v{} · {}').format(
        ident, version, name, version, str(cohort.get("hash", ""))[:12]
    )


def param_rows(params: dict[str, Any]) -> list[tuple[str, str]]:
    """The parameters a person set, as (name, value); the filter as text, a cohort linked."""
    rows = []
    for name, value in params.items():
        if value is None or value == [] or value == {}:
            continue
        if name == "where":
            shown = filter_text(value)
        elif name == "cohort" and isinstance(value, dict) and "definition" in value:
            shown = cohort_text(value)
        elif isinstance(value, dict):
            shown = json.dumps(value, sort_keys=True)
        else:
            shown = format_value(value)
        rows.append((name.replace("_", " "), shown))
    return rows


@dataclass
class NodeRow:
    """One node's share of a task over all its rounds."""

    node: str
    dataset: str
    status: str
    attempts: int = 0
    rounds: list[NodeRunStatus] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def folded(self) -> str:
        """How the rounds ended, e.g. "4 rounds, all done" or "3 done, 1 failed"."""
        counts: dict[str, int] = {}
        for run in self.rounds:
            counts[run.status.value] = counts.get(run.status.value, 0) + 1
        n = len(self.rounds)
        if len(counts) == 1:
            (status,) = counts
            return f"{n} round{'s' if n != 1 else ''}, {'all ' if n > 1 else ''}{status}"
        return ", ".join(f"{c} {s}" for s, c in counts.items())


def node_rows(runs: Sequence[NodeRunStatus], labels: dict[int, str]) -> list[NodeRow]:
    """The runs grouped by node and dataset, in the order the nodes first appear."""
    rows: dict[tuple[int, int], NodeRow] = {}
    for run in sorted(runs, key=lambda r: (r.round, r.run_id)):
        key = (run.node_id, run.dataset_id)
        row = rows.get(key)
        if row is None:
            label = labels.get(run.dataset_id, f"dataset #{run.dataset_id}")
            row = rows[key] = NodeRow(run.node_name, label, run.status.value)
        row.rounds.append(run)
        row.status = run.status.value  # the latest round's
        row.attempts += run.attempts
        if run.error and run.error not in row.notes:
            row.notes.append(run.error)
    return list(rows.values())


def plot_png(draw: Callable[[str], None]) -> bytes | None:
    """The PNG that ``draw(path)`` writes (a result's ``plot``); None if it cannot draw."""
    with _PLOT_LOCK, tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "plot.png")
        try:
            draw(path)
        except Exception:  # a result that cannot be drawn keeps its tables and text
            log.exception("a result plot failed")
            return None
        return Path(path).read_bytes()
