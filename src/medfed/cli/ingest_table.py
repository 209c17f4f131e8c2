"""``medfed node ingest table SRC --dataset NAME --strategy strategy.toml --config node.toml``.

One command, run in the foreground: reads the node secret and ``policy.min_cell_count``
from ``node.toml``, de-identifies SRC (never modified) with the strategy into
``--out`` (default ``<data_dir>/datasets/<dataset>``) as ``<dataset>.parquet`` (or
``.csv``), beside it ``<file>.report.json`` and ``<file>.summary.json``, and prints what
it did and the ``[[datasets]]`` entry to add to ``node.toml``.
"""

from __future__ import annotations

import re
from pathlib import Path

import typer

from medfed.cli.common import console
from medfed.common.errors import BadRequest
from medfed.common.extras import needed, require
from medfed.node.config import load_config

app = typer.Typer(help="Ingest and de-identify raw hospital exports.", no_args_is_help=True)

_DATASET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@app.callback()
def _group() -> None:
    """Ingest and de-identify raw hospital exports."""


@app.command("table")
def table(
    src: Path = typer.Argument(..., help="CSV or Parquet export (read only)"),
    dataset: str = typer.Option(..., "--dataset", "-d", help="dataset name"),
    strategy: Path = typer.Option(..., "--strategy", "-s", help="strategy.toml"),
    config: Path = typer.Option(..., "--config", "-c", help="path to node.toml"),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="output folder (default <data_dir>/datasets/<dataset>)"
    ),
    table_format: str = typer.Option("parquet", "--format", help="parquet or csv"),
) -> None:
    """De-identify a clinical table with a per-column strategy and a k-anonymity check."""
    if not _DATASET.match(dataset):
        raise BadRequest(f"dataset name '{dataset}' must be letters, digits, '.', '_' or '-'")
    if table_format not in ("parquet", "csv"):
        raise BadRequest(f"--format must be parquet or csv, not '{table_format}'")
    require("node", "pyarrow")
    with needed("node"):
        from medfed.node.ingest.tables.runner import ingest_table

    node = load_config(config)
    folder = out if out is not None else node.data_dir / "datasets" / dataset
    report = ingest_table(
        src,
        folder / f"{dataset}.{table_format}",
        strategy=strategy,
        secret=node.node_secret(),
        min_cell_count=node.policy.min_cell_count,
    )
    kanon = report.k_anonymity
    console.print(f"rows in {report.rows_in}, out {report.rows_out}")
    console.print(
        f"k-anonymity over ({', '.join(kanon.quasi_identifiers)}): k={kanon.k}, "
        f"suppressed {kanon.suppressed_groups} groups / {kanon.suppressed_rows} rows, "
        f"achieved k={kanon.achieved_k}"
    )
    for name, column in report.columns.items():
        console.print(f"  {name}: {column.rule}", highlight=False)
    console.print(f"output  {report.output}\nreport  {report.report}\nsummary {report.summary}")
    console.print(
        f'\nadd to node.toml:\n[[datasets]]\nname = "{dataset}"\npath = "{report.output}"',
        highlight=False,
        markup=False,  # "[[datasets]]" is TOML, not rich markup
    )
