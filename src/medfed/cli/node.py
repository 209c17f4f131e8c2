"""``medfed node start | ingest dicom | ingest table | export … | plans …``.

``start`` runs the node agent in the foreground until SIGTERM or Ctrl-C. The node's
code (DuckDB, Parquet, pydicom) is imported only when a command runs, so ``--help``
works everywhere and a plain ``pip install medfed`` answers a node command with
``this needs medfed[node]: …`` (see :mod:`medfed.common.extras`).
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType

import typer

from medfed.cli import export, ingest_dicom, ingest_table, plans
from medfed.common.extras import needed, require

app = typer.Typer(help="Run a node.", no_args_is_help=True)


@app.command()
def start(
    config: Path = typer.Option(..., "--config", "-c", help="path to node.toml"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Connect to the hub (outbound only), register datasets and run approved work."""
    require("node", "duckdb", "pyarrow")
    with needed("node"):
        from medfed.node.agent import NodeAgent
        from medfed.node.config import load_config

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    agent = NodeAgent(load_config(config))

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        agent.stop()
        raise SystemExit(0)  # interrupts a waiting long poll; an unfinished run is re-leased

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.run_forever()


ingest = typer.Typer(
    help="Ingest raw hospital exports into de-identified datasets.", no_args_is_help=True
)
ingest.command("dicom")(ingest_dicom.dicom)
ingest.command("table")(ingest_table.table)
app.add_typer(ingest, name="ingest")
app.add_typer(export.app, name="export")
app.add_typer(plans.app, name="plans")
