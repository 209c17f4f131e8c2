"""``medfed node omop load --mapping m.toml --table t.csv --cdm cdm.duckdb``.

Registers ``load`` on the ``medfed node omop`` group (``medfed.cli.node_optout.omop_app``):
reads a flat CSV or Parquet table, maps it into a DuckDB OMOP CDM 5.4 by the mapping file
(``medfed.node.omop_load``; the CDM and the medfed test vocabulary are created when new)
and prints the rows written per table. A problem is printed, nothing is written.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medfed.cli.common import console
from medfed.cli.node_optout import omop_app
from medfed.common.extras import needed, require


@omop_app.command("load")
def load(
    mapping: Path = typer.Option(..., "--mapping", "-m", help="the mapping file (TOML)"),
    table: Path = typer.Option(..., "--table", "-t", help="flat CSV or Parquet table"),
    cdm: Path = typer.Option(..., "--cdm", help="the CDM DuckDB file (created if new)"),
    vocabulary: str = typer.Option(
        "test", "--vocabulary", help="'test': load medfed's test vocabulary; 'none': leave it"
    ),
) -> None:
    """Flat table → OMOP CDM by a declarative mapping file."""
    require("node", "duckdb")
    with needed("node"):
        from medfed.node.omop_load import load_mapping, load_table
        from medfed.node.stores.tables import TableStore

    if vocabulary not in ("test", "none"):
        raise typer.BadParameter("--vocabulary must be 'test' or 'none'")
    spec = load_mapping(mapping)
    store = TableStore.open(table)
    frame = store.select([c.name for c in store.columns])
    store.close()
    written = load_table(
        mapping=spec,
        table=frame.reset_index(drop=True),
        cdm=cdm,
        vocabulary="test" if vocabulary == "test" else "none",
        source_name=table.name,
    )
    for name, n in sorted(written.items()):
        console.print(f"{name:<22} {n} rows")
