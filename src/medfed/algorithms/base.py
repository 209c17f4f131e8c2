"""The one algorithm interface: a local step on each node, an aggregate step on the hub.

How a task runs:

1. The researcher names an algorithm, datasets and raw parameters. The hub looks the
   algorithm up in the registry, calls :meth:`Algorithm.parse_params` and
   :meth:`Algorithm.validate` against the datasets' schemas; any problem raises
   :class:`~medfed.common.errors.BadRequest` and nothing is stored.
2. Round ``r`` (starting at 0): the hub creates one run per dataset. Each node calls
   :meth:`Algorithm.local` with a :class:`LocalContext` over its own table and the round's
   ``state`` (whatever the previous aggregate step asked to broadcast). The local step
   returns a JSON-able dict of aggregates, never rows.
3. The node's disclosure gate (``medfed.node.gate``) applies the algorithm's
   :meth:`Algorithm.disclosure` rules under the node's policy before anything leaves.
4. When every run of the round has ended, the hub calls :meth:`Algorithm.aggregate` with
   the gated outputs. It returns :class:`Finished` (the pooled result, a dict that
   validates as ``Result``) or :class:`NextRound` (a new broadcast ``state``) — multi-round
   methods (IRLS, Newton, FedAvg) use the latter.

An algorithm is stateless: everything a round needs travels in ``params`` and ``state``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from medfed.algorithms.dp import DPRule, DPSettings
from medfed.common.errors import BadRequest
from medfed.common.schemas import ColumnSchema, DatasetSchema

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from medfed.common.filters import Filter
    from medfed.node.gate.dominance import Magnitude


#: task parameters that belong to the task, not to its algorithm: a saved cohort and the
#: feature specification its variables come from (``medfed.algorithms.cohorts``)
TASK_KEYS = frozenset({"cohort", "features"})


class LocalData(Protocol):
    """Read access to one dataset on a node, as the local step sees it."""

    @property
    def columns(self) -> list[ColumnSchema]: ...

    def select(self, columns: Sequence[str], where: Filter | None = None) -> pd.DataFrame:
        """Rows of ``columns`` that match ``where`` (parameterized query, never string SQL)."""
        ...

    def count(self, where: Filter | None = None) -> int:
        """Number of rows that match ``where``."""
        ...

    def select_batches(
        self, columns: Sequence[str], where: Filter | None = None
    ) -> Iterator[pd.DataFrame]:
        """:meth:`select` in batches (each indexed by row id; at least one, maybe empty),
        for a step that sums over rows without holding them all."""
        ...

    def aggregate(
        self,
        expressions: Sequence[str],
        where: Filter | None = None,
        params: Sequence[Any] = (),
        *,
        columns: Sequence[str] = (),
    ) -> tuple[Any, ...]:
        """One row of SQL aggregates over the rows that match ``where``, run by DuckDB on
        the table (pushed down: no frame). ``expressions`` are built from quoted column
        names only (``medfed.common.sqlvalues``), anything else goes in ``params``;
        ``columns`` names the columns they read (their non-null rows are recorded as for
        :meth:`select`)."""
        ...


@dataclass(frozen=True)
class LocalContext:
    """Everything a local step gets: its data, the round, the broadcast state, the policy.

    Policy values come from the node's ``node.toml``: ``min_cell_count`` (counts under it
    are suppressed), ``min_rows`` (fewer rows than this and a model or test is refused),
    ``min_residual_df`` (a model whose rows minus parameters fall under it is refused, as
    ACRO's residual-degrees-of-freedom rule), ``max_param_fraction`` (a model with more
    parameters than this fraction of the node's rows is refused, as DataSHIELD's
    ``nfilter.glm``). A local step that must refuse raises
    :class:`~medfed.common.errors.Refused` with a message naming the rule.
    """

    data: LocalData
    round: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    min_cell_count: int = 5
    min_rows: int = 10
    max_param_fraction: float = 1 / 3
    #: a model must keep at least this many residual degrees of freedom (n - p) per node
    min_residual_df: int = 10
    #: node-side services for algorithms that need more than the table (learning: the
    #: approved-plan check, blob transport, the plan process); None for the others
    services: object | None = None
    #: the node's row-set memory for this run; None outside a node (in-process checks)
    recorder: CellRecorder | None = None
    #: set when the node is in dp mode: clamp to these bounds, see :meth:`Algorithm.noise`
    dp: DPSettings | None = None

    def cells(self, labels: pd.Series) -> None:
        """Declare the grid cells of the rows used (see :class:`CellRecorder`)."""
        if self.recorder is not None:
            self.recorder.cells(labels)

    def grid(self) -> CellGrid:
        """A grid declared batch by batch (:meth:`cells` over all its batches at once)."""
        return self.recorder.grid() if self.recorder is not None else _NoGrid()

    def magnitudes(self, label: str, values: Sequence[float] | np.ndarray) -> None:
        """Declare the row values behind a released sum or mean (dominance rules)."""
        if self.recorder is not None:
            self.recorder.magnitudes(label, values)

    def magnitude(self, label: str, figures: Magnitude) -> None:
        """:meth:`magnitudes` for a sum pushed down to DuckDB: its figures, computed there
        (``medfed.node.gate.dominance.magnitude_sql``)."""
        if self.recorder is not None:
            self.recorder.magnitude(label, figures)


class HubBlobs(Protocol):
    """The hub's binary store as an aggregate step sees it (learning weights)."""

    def read(self, sha256: str) -> bytes: ...

    def write(self, data: bytes, *, kind: str) -> str:
        """Store ``data``; returns its SHA-256 (hex)."""
        ...


@dataclass(frozen=True)
class HubContext:
    """What :meth:`Algorithm.aggregate_in` gets beyond the outputs (``uses_hub_context``).

    ``privacy_left`` is the project's remaining ε (None: no budget set) and
    ``privacy_delta`` its δ, both not counting this task.
    """

    task_id: int
    project_id: int
    dataset_ids: tuple[int, ...]
    blobs: HubBlobs
    privacy_left: float | None = None
    privacy_delta: float | None = None


@dataclass(frozen=True)
class MinRows:
    """Gate rule: ``output[key]`` counts the rows behind the whole output.

    When ``count < min_cell_count`` (zero included) the node's whole output is withheld (it
    answers ``suppressed`` and sends no value at all): no rows and a few rows look alike.
    """

    key: str


@dataclass(frozen=True)
class Grid:
    """Gate rule: ``output[key]`` holds the counts of a grid (nested lists/dicts of them).

    When any cell is between 1 and ``min_cell_count - 1`` the whole output is withheld, so
    which cell was small is never visible. Zero cells pass (DataSHIELD's ``nfilter.tab``).
    For every grid whose cells the researcher chooses: levels, bins, groups.
    """

    key: str


@dataclass(frozen=True)
class Cells:
    """Gate rule for monotone tails: ``output[key]`` holds counts (nested lists/dicts).

    Each count with ``0 < count < min_cell_count`` is replaced by ``None``. Only for series
    whose small cells' positions follow from the released ones (risk sets that shrink over
    time, ranks below a candidate value); any other grid uses :class:`Grid`.
    """

    key: str


Rule = MinRows | Grid | Cells


class CellGrid(Protocol):
    """One grid's cells declared batch by batch: ``add`` per batch, ``close`` once after."""

    def add(self, labels: pd.Series) -> None: ...

    def close(self) -> None: ...


class _NoGrid:
    """The grid of a step run outside a node: nothing to record."""

    def add(self, labels: pd.Series) -> None:
        return None

    def close(self) -> None:
        return None


class CellRecorder(Protocol):
    """The node's row-set memory as a local step sees it (``medfed.node.gate.rowsets``).

    A local step that releases counts or statistics per cell of a grid (levels, bins,
    groups) calls :meth:`cells` with the rows it used, indexed as ``LocalData.select``
    returned them, labelled by their cell; the node then refuses the run when those cells
    would split an earlier released row set into a part of 1..k-1 rows.
    """

    def cells(self, labels: pd.Series) -> None: ...

    def grid(self) -> CellGrid:
        """A grid recorded like :meth:`cells`, its labels given batch by batch."""
        ...

    def magnitudes(self, label: str, values: Sequence[float] | np.ndarray) -> None:
        """Record the values (one per row) that a released sum or mean adds up.

        The node keeps the total and the two largest absolute values per ``label`` and
        withholds the run when one or two rows dominate the total (``medfed.node.gate.
        dominance``); the values themselves never leave the node.
        """
        ...

    def magnitude(self, label: str, figures: Magnitude) -> None:
        """Record a released sum's total and two largest contributions, computed by SQL."""
        ...


class NodeOutput(BaseModel):
    """One node's gated answer for one round, as the aggregate step receives it."""

    node_id: int
    dataset_id: int
    status: Literal["ok", "suppressed"]
    payload: dict[str, Any] | None = None


@dataclass(frozen=True)
class Finished:
    """The aggregate step is done; ``result`` validates as the algorithm's ``Result``."""

    result: dict[str, Any]


@dataclass(frozen=True)
class NextRound:
    """Run another round; every node receives ``state`` in its :class:`LocalContext`."""

    state: dict[str, Any]


class Presentable(Protocol):
    """What a ``Result`` model may add for people: a text summary table and a PNG plot.

    The SDK and CLI call these when present (``medfed task run km … --plot km.png``).
    """

    def summary(self) -> str: ...

    def plot(self, path: str) -> None: ...


P = TypeVar("P", bound=BaseModel)


class Algorithm(ABC, Generic[P]):
    """Base class of every algorithm. Subclasses set the class variables and two steps."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]]
    Result: ClassVar[type[BaseModel]]

    def parse_params(self, raw: dict[str, Any]) -> P:
        """Validate raw parameters; a :class:`BadRequest` names the first problem.

        The task-level keys of :data:`TASK_KEYS` (a saved cohort and its features) are
        not the algorithm's and are left out.
        """
        if isinstance(raw, dict) and TASK_KEYS & raw.keys():
            raw = {key: value for key, value in raw.items() if key not in TASK_KEYS}
        try:
            return self.Params.model_validate(raw)  # type: ignore[return-value]
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "params"
            raise BadRequest(f"{self.name}: parameter {where}: {first['msg']}") from None

    def validate(self, params: P, schemas: Sequence[DatasetSchema]) -> None:
        """Check parameters against the datasets (unknown column, wrong type, bad filter)."""

    def disclosure(self, params: P) -> list[Rule]:
        """The gate rules that apply to this algorithm's local output."""
        return []

    def noise(self, params: P, ctx: LocalContext) -> list[DPRule] | None:
        """dp mode: a declaration for every key of :meth:`local`'s output when ``ctx.dp``
        is set (see :mod:`medfed.algorithms.dp`); None: no noisy variant, and a node in dp
        mode refuses the algorithm. May raise ``PolicyRefused`` (a missing bound)."""
        return None

    @abstractmethod
    def local(self, params: P, ctx: LocalContext) -> dict[str, Any]:
        """Run on a node over one dataset; return aggregates (JSON-able), never rows."""

    max_rounds: ClassVar[int] = 1
    #: exact models (GLM, Cox, Kaplan-Meier): a dataset whose run failed fails the task
    requires_every_dataset: ClassVar[bool] = False
    #: aggregate through :meth:`aggregate_in` with a :class:`HubContext` (learning)
    uses_hub_context: ClassVar[bool] = False

    def quorum(self, params: P, n: int) -> int | None:
        """Runs of a round of ``n`` that must be done; None: wait for every run to end.

        When a number, the round proceeds as soon as that many runs are done (the others
        are closed as failed), and a round that ends with fewer fails the task.
        """
        return None

    def round_timeout(self, params: P) -> float | None:
        """Seconds after which the hub closes a round's unfinished runs; None: never."""
        return None

    def participants(
        self, params: P, round: int, state: dict[str, Any], dataset_ids: Sequence[int]
    ) -> list[int]:
        """The datasets that get a run in ``round`` (client sampling); default: all."""
        return list(dataset_ids)

    def aggregate_in(
        self,
        params: P,
        round: int,
        state: dict[str, Any],
        outputs: Sequence[NodeOutput],
        hub: HubContext,
    ) -> Finished | NextRound:
        """:meth:`aggregate` with the hub's context; only called if ``uses_hub_context``."""
        return self.aggregate(params, round, state, outputs)

    @abstractmethod
    def aggregate(
        self, params: P, round: int, state: dict[str, Any], outputs: Sequence[NodeOutput]
    ) -> Finished | NextRound:
        """Run on the hub over the round's gated outputs."""
