"""``medfed node start | web | hub-fingerprint | datasets … | ingest … | export … | plans …``.

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

from medfed.cli import (
    airlock,
    export,
    ingest_dicom,
    ingest_table,
    node_datasets,
    node_omop,  # noqa: F401  (registers ``medfed node omop load``)
    node_optout,
    plans,
)
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
        from medfed.node.config import load_config, warn_loose_modes

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    node_config = load_config(config)
    warn_loose_modes(node_config)  # node.secret or node data readable by others
    agent = NodeAgent(node_config)

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        agent.stop()
        raise SystemExit(0)  # interrupts a waiting long poll; an unfinished run is re-leased

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.run_forever()


@app.command("hub-fingerprint")
def hub_fingerprint(
    url: str = typer.Argument(..., help="the hub's https:// URL"),
    ca_file: Path | None = typer.Option(
        None, "--ca-file", help="trust this PEM CA for the hub instead of the usual store"
    ),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="read the certificate without checking it (compare by eye)"
    ),
) -> None:
    """Print the SHA-256 of the hub's TLS certificate, to pin as hub_cert_sha256."""
    from medfed.node.tlspin import fetch_certificate

    cert = fetch_certificate(url, ca_file=ca_file, verify=not no_verify)
    typer.echo(f"subject:   {cert.subject}")
    typer.echo(f"issuer:    {cert.issuer}")
    typer.echo(f"not after: {cert.not_after.isoformat()}")
    typer.echo(f"sha256:    {cert.colons}")
    if not cert.verified:
        typer.echo("NOT verified (--no-verify): compare the fingerprint with the hub operator's")
    typer.echo("# in node.toml:")
    typer.echo(f'hub_cert_sha256 = "{cert.sha256}"')


@app.command()
def queries(
    config: Path = typer.Option(..., "--config", "-c", help="path to node.toml"),
    project: int | None = typer.Option(None, "--project", help="only this project's runs"),
    withheld: bool = typer.Option(False, "--withheld", help="only runs the gate withheld"),
) -> None:
    """The steward's view of the node log: every query on this node's data, rule by rule.

    One line per run: time, project, task, algorithm, dataset, what the node decided, the
    rule that withheld or refused it (``subset``, ``differencing``, ``threshold``,
    ``local``, ``policy``), the keyed hash of its filter (equal filters, equal hashes) and
    how many row sets it used. Runs flagged ``!`` were withheld by the subset or
    differencing rule: repeated ones from one project suggest an attack.
    """
    from rich.console import Console
    from rich.table import Table

    from medfed.node.config import load_config
    from medfed.node.runlog import RunLog

    cfg = load_config(config)
    table = Table(title=f"queries on {cfg.data_dir}")
    for column in ("time", "project", "task", "algorithm", "dataset", "decision", "rule"):
        table.add_column(column)
    table.add_column("filter")
    table.add_column("sets", justify="right")
    for entry in RunLog(cfg.data_dir / "runs.jsonl").entries():
        if "run_id" not in entry:
            continue  # an alarm line
        if project is not None and entry.get("project_id") != project:
            continue
        rule = entry.get("rule") or ""
        if withheld and not entry.get("withheld"):
            continue
        decision = entry.get("output_status") or entry.get("status") or ""
        flag = "!" if rule in ("subset", "differencing") else ""
        table.add_row(
            str(entry.get("time", ""))[:19],
            str(entry.get("project_id", "")),
            str(entry.get("task_id", "")),
            str(entry.get("algorithm", "")),
            str(entry.get("dataset", "")),
            decision,
            f"{flag}{rule}",
            str(entry.get("filter_hmac", ""))[:12],
            str(len(entry.get("rowsets") or [])),
        )
    Console(emoji=False).print(table)


@app.command()
def web(
    config: Path = typer.Option(..., "--config", "-c", help="path to node.toml"),
    port: int = typer.Option(8765, "--port", help="port on 127.0.0.1"),
) -> None:
    """The steward's web pages (plan requests, airlock) on 127.0.0.1 only."""
    require("node", "duckdb", "pyarrow")
    import uvicorn

    from medfed.node.config import load_config
    from medfed.node.web.app import create_app
    from medfed.node.web.session import steward_token, token_path

    cfg = load_config(config)
    token, new = steward_token(cfg.data_dir)
    if new:
        typer.echo(f"steward token (shown once; kept in {token_path(cfg.data_dir)}): {token}")
    typer.echo(f"steward pages: http://127.0.0.1:{port}/")
    uvicorn.run(create_app(cfg), host="127.0.0.1", port=port, log_level="warning")


ingest = typer.Typer(
    help="Ingest raw hospital exports into de-identified datasets.", no_args_is_help=True
)
ingest.command("dicom")(ingest_dicom.dicom)
ingest.command("table")(ingest_table.table)
app.add_typer(ingest, name="ingest")
app.add_typer(export.app, name="export")
app.add_typer(plans.app, name="plans")
app.add_typer(airlock.app, name="airlock")
app.add_typer(node_datasets.app, name="datasets")
app.add_typer(node_optout.app, name="optout")
app.add_typer(node_optout.omop_app, name="omop")
