"""``medfed node airlock list | show ID | release ID | refuse ID --reason …`` (the steward).

The airlock (:mod:`medfed.node.airlock`) holds script outputs the automatic checks could
not classify. These commands read and decide items in ``DATA_DIR/airlock/`` directly; the
running agent then posts the run's outcome to the hub, and records the decision in its
run log and the hub's ledger (within about a second).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.table import Table

from medfed.cli.common import console
from medfed.node.airlock import Airlock, AirlockItem
from medfed.node.config import load_config

app = typer.Typer(help="Script outputs waiting for the steward.", no_args_is_help=True)
ConfigOption = typer.Option(..., "--config", "-c", help="path to node.toml")


def _airlock(config: Path) -> Airlock:
    return Airlock(load_config(config).data_dir)


def _when(stamp: float | None) -> str:
    return "" if stamp is None else datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M")


@app.command("list")
def list_items(
    config: Path = ConfigOption,
    all_items: bool = typer.Option(False, "--all", help="decided items too"),
) -> None:
    """Items in the airlock (by default only those waiting for a decision)."""
    items = _airlock(config).items(None if all_items else "held")
    table = Table("id", "run", "task", "project", "dataset", "held outputs", "status", "since")
    for item in items:
        table.add_row(
            str(item.id),
            str(item.run_id),
            str(item.task_id),
            str(item.project_id),
            item.dataset,
            ", ".join(item.held_names),
            item.status,
            _when(item.created_at),
        )
    console.print(table if items else "the airlock is empty")


def _show(item: AirlockItem) -> None:
    console.print(
        f"item {item.id}: run {item.run_id}, task {item.task_id}, project {item.project_id}, "
        f"dataset {item.dataset}, script {item.script[:12]}…, {item.status}"
    )
    if item.reason:
        console.print(f"reason: {item.reason}")
    for name, entry in sorted(item.outputs.items()):
        rule = f" ({entry['rule']})" if entry.get("rule") else ""
        console.print(f"\n[bold]{name}[/bold] [{entry['kind']}] {entry['verdict']}{rule}")
        if entry.get("data") is not None:
            console.print(json.dumps(entry["data"], indent=2), markup=False, highlight=False)


@app.command("show")
def show(item_id: int = typer.Argument(..., metavar="ID"), config: Path = ConfigOption) -> None:
    """Every output of the run, with its verdict; the held ones in full."""
    _show(_airlock(config).get(item_id))


@app.command("release")
def release(item_id: int = typer.Argument(..., metavar="ID"), config: Path = ConfigOption) -> None:
    """Let the held outputs leave with the run's other outputs."""
    item = _airlock(config).decide(item_id, "released")
    console.print(f"released airlock item {item.id} (run {item.run_id})")


@app.command("refuse")
def refuse(
    item_id: int = typer.Argument(..., metavar="ID"),
    reason: str = typer.Option(..., "--reason", help="why (kept at the node)"),
    config: Path = ConfigOption,
) -> None:
    """Withhold the held outputs; the run's other outputs leave as checked."""
    item = _airlock(config).decide(item_id, "refused", reason=reason)
    console.print(f"refused airlock item {item.id} (run {item.run_id})")
