"""``medfed node start | ingest dicom | ingest table | export build | export open``."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType

import typer

from medfed.cli import export, ingest_dicom, ingest_table, plans
from medfed.node.agent import NodeAgent
from medfed.node.config import load_config

app = typer.Typer(help="Run a node.", no_args_is_help=True)


@app.command()
def start(
    config: Path = typer.Option(..., "--config", "-c", help="path to node.toml"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Connect to the hub (outbound only), register datasets and run approved work."""
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
