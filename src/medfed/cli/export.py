"""``medfed node export build|open|keygen``: encrypted packages for approved transfers.

- ``keygen --out PREFIX`` writes ``PREFIX.key`` (mode 0600) and ``PREFIX.pub``: an X25519
  pair for receiving packages, or with ``--sign`` an Ed25519 pair for signing them.
- ``build SOURCE --strategy s.toml --recipient r.pub --terms terms.txt --out pkg.tar
  --config node.toml [--where FILTER] [--sign-key s.key]``: SOURCE is a CSV/Parquet file
  or a dataset name from ``node.toml``; selects, pseudonymizes, verifies, encrypts.
- ``open pkg.tar --key r.key --out DIR [--sender-key s.pub]``: verifies everything,
  decrypts into DIR and prints the terms of use; a tampered package writes nothing.

``build`` and ``open`` need the node's table code (``medfed[node]``), imported when they
run; ``keygen`` needs only medfed itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast

import typer

from medfed.cli.common import console
from medfed.common.errors import BadRequest
from medfed.common.extras import needed, require
from medfed.node.config import load_config
from medfed.node.export import crypto

app = typer.Typer(help="Encrypted export packages for approved transfers.", no_args_is_help=True)


def _source(source: str, config: Path) -> Path:
    path = Path(source)
    if path.is_file():
        return path
    for dataset in load_config(config).datasets:
        if dataset.name == source:
            return dataset.path
    raise BadRequest(f"'{source}' is neither a file nor a dataset in {config}")


def _person_column(source: Path, config: Path, given: str | None) -> str | None:
    """The opt-out column: the option, else that of the node.toml dataset at this path."""
    if given is not None:
        return given
    for dataset in load_config(config).datasets:
        if dataset.path.resolve() == source.resolve():
            return dataset.person_column
    return None


@app.command()
def build(
    source: str = typer.Argument(..., help="CSV/Parquet file or dataset name in node.toml"),
    strategy: Path = typer.Option(..., "--strategy", "-s", help="strategy.toml"),
    recipient: Path = typer.Option(..., "--recipient", "-r", help="recipient's X25519 .pub"),
    terms: Path = typer.Option(..., "--terms", "-t", help="terms of use (text file)"),
    out: Path = typer.Option(..., "--out", "-o", help="package file to write (.tar)"),
    config: Path = typer.Option(..., "--config", "-c", help="path to node.toml"),
    where: str | None = typer.Option(None, "--where", "-w", help="cohort filter, e.g. age>=50"),
    table_format: str = typer.Option("parquet", "--format", help="parquet or csv"),
    sign_key: Path | None = typer.Option(None, "--sign-key", help="sender's Ed25519 .key"),
    person_column: str | None = typer.Option(
        None,
        "--person-column",
        help="column naming each row's person (default: the dataset's person_column): "
        "persons in the node's opt-out register are left out",
    ),
) -> None:
    """Select a cohort, pseudonymize, verify k-anonymity, encrypt, attach terms, write."""
    if table_format not in ("parquet", "csv"):
        raise BadRequest(f"--format must be parquet or csv, not '{table_format}'")
    require("node", "duckdb", "pyarrow")
    with needed("node"):
        from medfed.node.export.package import build_package
        from medfed.node.ingest.tables.strategy import load_strategy
    try:
        terms_text = terms.read_text()
    except OSError as exc:
        raise BadRequest(f"cannot read terms {terms}: {exc.strerror}") from None
    signer = crypto.load_ed25519_private(sign_key) if sign_key else None
    from medfed.node.stores.optout import OptOutRegister, register_path

    node_config = load_config(config)
    source_path = _source(source, config)
    column = _person_column(source_path, config, person_column)
    register = OptOutRegister(register_path(node_config.data_dir), secret=node_config.node_secret())
    report = build_package(
        source=source_path,
        person_column=column,
        excluded_persons=register.excluded if column else None,
        out=out,
        strategy=load_strategy(strategy),
        secret=load_config(config).node_secret(),
        recipient=crypto.load_x25519_public(recipient),
        terms=terms_text,
        where=where,
        table_format=cast(Literal["parquet", "csv"], table_format),
        sign_key=signer,
    )
    kanon = report.k_anonymity
    console.print(f"package {report.package} (manifest {report.manifest_id})", highlight=False)
    console.print(
        f"rows selected {report.rows_selected}, exported {report.rows_out}; suppressed "
        f"{kanon.suppressed_rows} rows in {kanon.suppressed_groups} groups; k={kanon.achieved_k}"
    )
    for entry in report.files:
        console.print(f"  {entry['name']}  {entry['size']} bytes  sha256 {entry['sha256']}")
    console.print(f"recipient key {report.recipient}", highlight=False)
    if report.sender:
        console.print(f"signed by     {report.sender}", highlight=False)


@app.command("open")
def open_(
    package: Path = typer.Argument(..., help="package file (.tar)"),
    key: Path = typer.Option(..., "--key", "-k", help="your X25519 private .key"),
    out: Path = typer.Option(..., "--out", "-o", help="new folder for the decrypted files"),
    sender_key: Path | None = typer.Option(
        None, "--sender-key", help="require a signature by this Ed25519 .pub"
    ),
) -> None:
    """Verify and decrypt a package; print its terms of use. Tampered packages are refused."""
    require("node", "duckdb", "pyarrow")
    with needed("node"):
        from medfed.node.export.package import open_package

    sender = crypto.load_ed25519_public(sender_key) if sender_key else None
    opened = open_package(
        package,
        out,
        key=crypto.load_x25519_private(key),
        sender_key=sender,
    )
    console.print(f"verified and decrypted into {opened.out}:", highlight=False)
    for name in opened.files:
        console.print(f"  {name}", highlight=False)
    if opened.signed_by:
        pinned = "pinned" if sender_key else "not pinned: pass --sender-key to require it"
        console.print(f"signed by {opened.signed_by} ({pinned})", highlight=False)
    console.print("\nTERMS OF USE\n", highlight=False)
    console.print(opened.terms, highlight=False, markup=False)


@app.command()
def keygen(
    out: Path = typer.Option(..., "--out", "-o", help="file prefix: writes PREFIX.key, .pub"),
    sign: bool = typer.Option(False, "--sign", help="an Ed25519 signing pair instead"),
) -> None:
    """Make a key pair: X25519 to receive packages (default) or Ed25519 to sign them."""
    kind: crypto.KeyKind = "ed25519" if sign else "x25519"
    key_path, pub_path = crypto.write_keypair(out, kind)
    public = crypto.load_ed25519_public(pub_path) if sign else crypto.load_x25519_public(pub_path)
    console.print(f"private key {key_path} (mode 0600)\npublic key  {pub_path}", highlight=False)
    console.print(f"fingerprint {crypto.fingerprint(public)}", highlight=False)
