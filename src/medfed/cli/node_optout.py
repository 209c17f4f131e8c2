"""``medfed node optout add|remove|import-fhir|status`` and ``medfed node omop ingest-fhir``.

The steward runs these on the node's machine; none contacts the hub. ``add`` and
``remove`` take person ids as the datasets hold them (an OMOP ``person_id``, a table's
``person_column`` value) or, with ``--hospital-id``, the hospital's patient ids (MRNs),
which are turned into the node's pseudonym — or, with ``--cdm``, into that CDM's
``person_id`` — before anything is stored. ``import-fhir DIR`` reads the FHIR Consents of
a bulk export (see :mod:`medfed.node.ingest.fhir.consent`). ``status`` prints the counts
and the last reconciliation time locally; they are never sent. A running node applies
every change before its next run (:mod:`medfed.node.stores.optout`).

``omop ingest-fhir DIR --cdm cdm.duckdb`` maps a FHIR R4 bulk export into an OMOP CDM,
de-identified (:mod:`medfed.node.ingest.fhir.runner`); its Consents go to the register.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medfed.cli.common import console
from medfed.common.errors import BadRequest
from medfed.common.extras import needed, require
from medfed.node.config import NodeConfig, load_config
from medfed.node.stores.optout import OptOutRegister, register_path

app = typer.Typer(help="The node's patient opt-out register.", no_args_is_help=True)
omop_app = typer.Typer(help="OMOP CDM data at the node.", no_args_is_help=True)
ConfigOption = typer.Option(..., "--config", "-c", help="path to node.toml")
HospitalOption = typer.Option(
    False, "--hospital-id", help="the ids are hospital patient ids (MRNs): store pseudonyms"
)
CdmOption = typer.Option(None, "--cdm", help="CDM (DuckDB) whose person_id to store")


def _register(config: Path) -> tuple[OptOutRegister, NodeConfig]:
    cfg = load_config(config)
    return OptOutRegister(register_path(cfg.data_dir), secret=cfg.node_secret()), cfg


def _persons(ids: list[str], *, secret: str, hospital: bool, cdm: Path | None) -> list[str]:
    if not ids:
        raise BadRequest("optout: name at least one person")
    if not hospital:
        return ids
    from medfed.node.ingest.fhir.deid import FhirDeid

    deid = FhirDeid(secret)
    pseudonyms = [deid.pseudonym(i) for i in ids]
    if cdm is None:
        return pseudonyms
    import duckdb

    con = duckdb.connect(str(cdm), read_only=True)
    try:
        deid.load_persons(con)
    except duckdb.Error:
        raise BadRequest(f"optout: {cdm} holds no person map of a FHIR ingest") from None
    finally:
        con.close()
    known = deid.resolve()
    missing = sum(1 for p in pseudonyms if p not in known)
    if missing:
        raise BadRequest(f"optout: {missing} of the ids are not persons of {cdm.name}")
    return [str(known[p]) for p in pseudonyms]


@app.command("add")
def add(
    ids: list[str] = typer.Argument(..., help="person ids"),
    config: Path = ConfigOption,
    hospital_id: bool = HospitalOption,
    cdm: Path | None = CdmOption,
) -> None:
    """Opt persons out of every use of this node's data, from the node's next run on."""
    register, cfg = _register(config)
    register.add(_persons(ids, secret=cfg.node_secret(), hospital=hospital_id, cdm=cdm))
    console.print("recorded; the node applies it before its next run")


@app.command("remove")
def remove(
    ids: list[str] = typer.Argument(..., help="person ids"),
    config: Path = ConfigOption,
    hospital_id: bool = HospitalOption,
    cdm: Path | None = CdmOption,
) -> None:
    """Withdraw opt-outs (a FHIR deny dated later opts the person out again)."""
    register, cfg = _register(config)
    register.remove(_persons(ids, secret=cfg.node_secret(), hospital=hospital_id, cdm=cdm))
    console.print("recorded; the node applies it before its next run")


@app.command("import-fhir")
def import_fhir(
    directory: Path = typer.Argument(..., help="folder of a FHIR bulk export (NDJSON)"),
    config: Path = ConfigOption,
    cdm: Path | None = CdmOption,
) -> None:
    """Record the research Consents (deny / permit) of a FHIR bulk export."""
    require("node", "duckdb")
    with needed("node"):
        from medfed.node.ingest.fhir.optout_import import import_consents
    register, cfg = _register(config)
    added = import_consents(directory, register=register, secret=cfg.node_secret(), cdm=cdm)
    console.print(f"{added} new consent decision(s) recorded")


@app.command("status")
def status(config: Path = ConfigOption) -> None:
    """Counts and the last reconciliation time (shown here only, never sent)."""
    register, _ = _register(config)
    state = register.status()
    console.print(f"opted out now        {state.opted_out}")
    console.print(f"decisions recorded   {state.events} ({state.from_fhir} from FHIR Consents)")
    console.print(f"last reconciliation  {state.last_reconciled or 'never'}")
    console.print(f"register hash        {state.digest}", highlight=False)


@omop_app.command("ingest-fhir")
def ingest_fhir(
    directory: Path = typer.Argument(..., help="folder of a FHIR R4 bulk export (NDJSON)"),
    cdm: Path = typer.Option(..., "--cdm", help="the CDM DuckDB file (created if new)"),
    config: Path = ConfigOption,
) -> None:
    """FHIR R4 bulk NDJSON → OMOP CDM, de-identified; Consents into the opt-out register."""
    require("node", "duckdb")
    with needed("node"):
        from medfed.node.ingest.fhir.runner import ingest_fhir as run

    register, cfg = _register(config)
    report = run(directory, cdm=cdm, secret=cfg.node_secret(), register=register)
    for kind, n in sorted(report.resources.items()):
        console.print(f"{kind:<20} {n} read")
    for table, n in sorted(report.rows.items()):
        console.print(f"  → {table:<22} {n} rows")
    for why, n in sorted(report.skipped.items()):
        console.print(f"skipped: {why}: {n}")
    console.print(f"consent decisions recorded: {report.consents}")
