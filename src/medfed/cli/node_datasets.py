"""``medfed node datasets status | new-version NAME`` (the steward, on the node's machine).

``status`` reads each dataset's file and compares it with the version this node last
registered at the hub (:mod:`medfed.node.drift`): unchanged, new content (the next start
registers the next version), a changed schema (refused until a new version is registered)
or unreadable. ``new-version NAME`` accepts the file's current schema: the node's record
takes it, and the next start of the node registers the file as the hub's next version
(the released ones stay as they are). Neither command contacts the hub.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from medfed.cli.common import console
from medfed.common.errors import BadRequest, NotFound
from medfed.common.schemas import ColumnSchema
from medfed.node.config import DatasetConfig, load_config
from medfed.node.drift import DriftRecord, Verdict

app = typer.Typer(
    help="The node's datasets against their registered versions.", no_args_is_help=True
)
ConfigOption = typer.Option(..., "--config", "-c", help="path to node.toml")


def _verdict(record: DriftRecord, dataset: DatasetConfig) -> tuple[Verdict, list[ColumnSchema]]:
    """The file against the record, and the file's schema (an unreadable file raises)."""
    from medfed.node.manifest import manifest_root
    from medfed.node.stores.tables import TableStore

    store = TableStore.open(dataset.path)
    try:
        return record.check(dataset.name, store.columns, manifest_root(store)), store.columns
    finally:
        store.close()


@app.command("status")
def status(config: Path = ConfigOption) -> None:
    """Each dataset: its registered version and whether the file still matches it."""
    cfg = load_config(config)
    record = DriftRecord(cfg.data_dir)
    table = Table(title=f"datasets of {config}")
    for column in ("dataset", "version", "file"):
        table.add_column(column)
    for dataset in cfg.datasets:
        entry = record.entry(dataset.name) or {}
        try:
            verdict, _ = _verdict(record, dataset)
            state = {
                "new": "not registered yet",
                "same": "unchanged",
                "content": "new content: the next start registers a new version",
                "schema": "schema changed (" + "; ".join(verdict.changes) + "): refused",
            }[verdict.kind]
        except BadRequest as exc:
            state = f"unreadable: {exc.message}"
        table.add_row(dataset.name, str(entry.get("version", "")), state)
    console.print(table)


@app.command("new-version")
def new_version(
    name: str = typer.Argument(..., help="the dataset's name in node.toml"),
    config: Path = ConfigOption,
) -> None:
    """Accept the file's current schema; the next node start registers a new version."""
    cfg = load_config(config)
    dataset = next((d for d in cfg.datasets if d.name == name), None)
    if dataset is None:
        raise NotFound(f"no dataset '{name}' in {config}")
    record = DriftRecord(cfg.data_dir)
    verdict, columns = _verdict(record, dataset)  # an unreadable file: refused, unchanged
    record.accept(name, columns)
    if verdict.kind == "schema":
        console.print(f"accepted the new schema of '{name}': " + "; ".join(verdict.changes))
    else:
        console.print(f"'{name}': the schema is unchanged; its content is registered anew")
    console.print("restart the node (systemctl restart medfed-node) to register the new version")
