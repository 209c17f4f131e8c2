"""``medfed audit verify | trail | compare``: check the hub's log from the outside."""

from __future__ import annotations

from pathlib import Path

import typer

from medfed.cli.common import TokenOption, UrlOption, client, console, err_console, table
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
    rows = [
        [i.index, i.time, i.action, i.actor, i.objects, "yes" if i.proven else "NO"] for i in items
    ]
    table(f"dataset {dataset}", ["index", "time", "action", "actor", "objects", "proven"], rows)
    if not all(i.proven for i in items):
        raise typer.Exit(1)


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
