"""``medfed node plans pending | show | approve | reject | list | history`` (the steward).

A training runs at this node only under an approved *envelope* (the plan's hash plus the
settings that change what leaves: datasets, columns, holdout, batch size, epochs and
rounds bounds, initial weights, metrics, DP, secure aggregation, minimum nodes and rows).
A training no approval covers is refused and recorded as a pending request; the steward
sees it here (or on the node's web pages, ``medfed node web``) with its source, a diff
against the plan's earlier approved version and who asked, and decides. Decisions land
in ``DATA_DIR/plans/approvals.json`` (atomically); the agent reads it before every run.
Hashes may be given as a unique prefix.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.syntax import Syntax
from rich.table import Table

from medfed.cli.common import console
from medfed.node.config import load_config
from medfed.node.plans import PlanApprovals

app = typer.Typer(help="Review and approve training requests (envelopes).", no_args_is_help=True)
ConfigOption = typer.Option(..., "--config", "-c", help="path to node.toml")
HashArg = typer.Argument(..., metavar="HASH", help="envelope hash (or a unique prefix)")


def _approvals(config: Path) -> PlanApprovals:
    return PlanApprovals(load_config(config).data_dir)


def _table(*columns: str) -> Table:
    """A table whose first column (a hash prefix the steward copies) is never cut."""
    table = Table()
    table.add_column(columns[0], no_wrap=True, min_width=16)
    for column in columns[1:]:
        table.add_column(column)
    return table


@app.command("pending")
def pending(config: Path = ConfigOption) -> None:
    """Training requests waiting for the steward's decision."""
    table = _table("envelope", "plan", "name", "project", "task", "dataset", "requested")
    for digest, req in sorted(_approvals(config).pending().items()):
        table.add_row(
            digest[:16],
            str(req.get("plan", ""))[:12],
            str(req.get("name", "")),
            str(req.get("project_id", "")),
            str(req.get("task_id", "")),
            str(req.get("dataset", "")),
            str(req.get("requested_at", ""))[:19],
        )
    console.print(table)


@app.command("list")
def list_decisions(config: Path = ConfigOption) -> None:
    """Every decision of this node's steward, with how many runs went ahead under each."""
    approvals = _approvals(config)
    table = _table("envelope", "decision", "plan", "name", "decided", "runs", "reason")
    for digest, entry in sorted(approvals.decisions().items(), key=lambda kv: kv[1]["at"]):
        table.add_row(
            digest[:16],
            str(entry["decision"]),
            str(entry.get("plan", ""))[:12],
            str(entry.get("name", "")),
            str(entry.get("at", ""))[:19],
            str(len(approvals.history(digest))),
            str(entry.get("reason", "")),
        )
    console.print(table)


@app.command("show")
def show(digest: str = HashArg, config: Path = ConfigOption) -> None:
    """A request: who asked, its envelope, the source and the diff to the earlier version."""
    view = _approvals(config).request(digest)
    console.print(f"envelope {view['hash']} — {view['status']}  (plan {view['name']!r})")
    for key, value in view["who"].items():
        console.print(f"  {key}: {value}")
    console.print(json.dumps(view["envelope"], indent=2, sort_keys=True), markup=False)
    if view["diff"]:
        console.print(f"changes against plan {view['earlier_plan'][:12]} (approved earlier):")
        console.print(Syntax(view["diff"], "diff"))
    elif view["earlier_plan"] is None:
        console.print("no earlier approved version of this plan name")
    console.print(Syntax(view["source"], "python", line_numbers=True))


@app.command("approve")
def approve(
    digest: str = HashArg,
    config: Path = ConfigOption,
    reason: str = typer.Option("", "--reason", help="why (kept with the decision)"),
    max_rounds: int | None = typer.Option(None, "--max-rounds", help="raise the rounds bound"),
    max_epochs: int | None = typer.Option(None, "--max-epochs", help="raise the epochs bound"),
) -> None:
    """Allow trainings with exactly this envelope (rounds and epochs up to the bounds)."""
    bounds = {k: v for k, v in (("max_rounds", max_rounds), ("max_epochs", max_epochs)) if v}
    recorded = _approvals(config).decide(digest, "approved", reason=reason, bounds=bounds)
    console.print(f"envelope {recorded} approved")


@app.command("reject")
def reject(
    digest: str = HashArg,
    config: Path = ConfigOption,
    reason: str = typer.Option(..., "--reason", help="why (the researcher's task shows none)"),
) -> None:
    """Refuse this envelope (trainings with it are answered ``refused``)."""
    recorded = _approvals(config).decide(digest, "rejected", reason=reason)
    console.print(f"envelope {recorded} rejected")


@app.command("history")
def history(
    digest: str | None = typer.Argument(None, metavar="[HASH]"), config: Path = ConfigOption
) -> None:
    """What ran under each approval (or under one): task, run, round, phase, time."""
    approvals = _approvals(config)
    full = approvals.resolve(digest) if digest else None
    table = _table("approval", "task", "run", "project", "round", "phase", "dataset", "at")
    for row in approvals.history(full):
        table.add_row(
            str(row.get("approval", ""))[:16],
            *(str(row.get(k, "")) for k in ("task_id", "run_id", "project_id", "round")),
            str(row.get("phase", "")),
            str(row.get("dataset", "")),
            str(row.get("at", ""))[:19],
        )
    console.print(table)
