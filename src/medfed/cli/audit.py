"""``medfed audit verify | trail | compare | queries``: check the hub's log from the outside.

``queries`` is the stewards' view of the queries made on their organization's data
(``GET /api/audit/queries``), refusals by differencing, subset and budget flagged ``!``.

``trail`` prints one row per log entry that names the dataset: its index, the time (UTC,
to the second), the action, who did it (``user:3``, ``node:2``, ``hub``), the other ids
it names (``run 12; task 7``), and whether its inclusion proof checked against the
latest signed checkpoint.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from medfed.cli.common import TokenOption, UrlOption, client, console, err_console
from medfed.common.audit_resources import QueryAuditEntry
from medfed.sdk import audit as audit_sdk

app = typer.Typer(help="Verify the hub's audit log.", no_args_is_help=True)


@app.command()
def verify(url: str | None = UrlOption, token: str | None = TokenOption) -> None:
    """Fetch every entry and checkpoint and recompute the whole log; exit 1 on any problem."""
    report = audit_sdk.verify(client(url, token).ledger)
    console.print(
        f"{report.size} entries, {report.checkpoints_checked} checkpoints, "
        f"{report.cosignatures_checked} cosignatures checked; root {report.root[:16]}…"
    )
    if not report.ok:
        for problem in report.problems[:20]:
            err_console.print(f"[red]{problem}[/red]")
        err_console.print(f"[red]verification failed; first bad index: {report.first_bad_index}")
        raise typer.Exit(1)
    console.print("[green]the log verifies[/green]")


@app.command()
def trail(
    dataset: int = typer.Option(..., "--dataset", help="dataset id"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Every use of a dataset, each with its inclusion proof checked."""
    items = audit_sdk.trail(client(url, token).ledger, dataset)
    out = Table(title=f"audit trail of dataset {dataset}: {len(items)} entries")
    out.add_column("#", justify="right", no_wrap=True)
    out.add_column("time (UTC)", no_wrap=True)
    out.add_column("action", no_wrap=True)
    out.add_column("by", no_wrap=True)
    out.add_column("also names")
    out.add_column("proven", no_wrap=True)
    for i in items:
        proven = "yes" if i.proven else "[red]NO[/red]"
        out.add_row(
            str(i.index), _when(i.time), i.action, i.actor, _objects(i.objects, dataset), proven
        )
    console.print(out)
    if not all(i.proven for i in items):
        raise typer.Exit(1)


def _when(text: str) -> str:
    try:
        return f"{datetime.fromisoformat(text):%Y-%m-%d %H:%M:%S}"
    except ValueError:
        return text


def _objects(objects: dict[str, Any], dataset: int) -> str:
    """``datasets 3,4; run 12; task 7``: the ids an entry names, less the dataset itself."""
    parts = []
    for kind, value in sorted(objects.items()):
        if kind == "dataset" and value == dataset:
            continue
        shown = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        parts.append(f"{kind} {shown}")
    return "; ".join(parts) or "-"


@app.command()
def compare(
    node_log: Path = typer.Option(..., "--node-log", help="the node's state/runs.jsonl"),
    node: int = typer.Option(..., "--node", help="the node's id at the hub"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Check a node's own run log against the hub's log (hash of what left the node)."""
    result = audit_sdk.compare(client(url, token).ledger, node_log, node)
    console.print(
        f"{len(result.matched)} runs match; {len(result.differ)} differ; "
        f"{len(result.missing_at_hub)} missing at the hub; "
        f"{len(result.missing_at_node)} missing at the node"
    )
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def queries(
    project: int | None = typer.Option(None, "--project", "-p", help="only this project"),
    flagged: bool = typer.Option(
        False, "--flagged", help="only refusals by the differencing, subset or budget rule"
    ),
    limit: int = typer.Option(1000, "--limit", min=1, max=5000, help="newest this many"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Stewards: the queries made on your organization's data, per project, newest first.

    Per project a heading, then one line per run at one of your datasets (and per task the
    hub refused for its project's query budget): time (UTC), task, researcher, algorithm,
    dataset@node, the decision, the rule's category, the node's keyed filter hash and
    row-set fingerprint (first 12 hex digits) and the filter. Refusals by the
    differencing, subset or budget rule are flagged ``!``.
    """
    items = client(url, token).ledger.queries(project, flagged=flagged, limit=limit)
    projects: dict[int, list[QueryAuditEntry]] = {}
    for item in items:
        projects.setdefault(item.project_id, []).append(item)
    console.print(f"{len(items)} queries on your organization's data", highlight=False)
    for rows in projects.values():
        marked = sum(1 for r in rows if r.flagged)
        console.print(
            f"project {rows[0].project_id} {rows[0].project_name}: {len(rows)} queries, "
            f"{marked} flagged",
            highlight=False,
        )
        for i in rows:
            console.print(
                "  "
                + "  ".join(
                    [
                        f"{i.time:%Y-%m-%d %H:%M:%S}",
                        f"task {i.task_id}" if i.task_id is not None else "not stored",
                        i.researcher,
                        i.algorithm,
                        f"{i.dataset_name}@{i.node_name}",
                        i.decision,
                        f"{'!' if i.flagged else ''}{i.rule or '-'}",
                        f"filter {(i.filter_hash or '-')[:12]}",
                        f"rows {(i.rowset_fingerprint or '-')[:12]}",
                        i.filter_text or "(no filter)",
                    ]
                ),
                highlight=False,
                markup=False,
            )
