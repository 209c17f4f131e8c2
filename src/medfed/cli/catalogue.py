"""``medfed datasets describe|release|publish|invalidate|reactivate|show|search|wait``.

Each command calls the hub through ``medfed.Client.catalogue`` and prints the dataset's
state, version and pid (or, for ``search``, the matching datasets and the facet counts).
``describe`` sets a draft's catalogue metadata from options, from a TOML or JSON file, or
both (options win); everything is checked before anything is sent, so bad input changes
nothing. ``wait`` polls until a node has registered the named datasets.
"""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from medfed.cli.common import (
    TokenOption,
    UrlOption,
    client,
    comma_help,
    console,
    split_commas,
    table,
)
from medfed.common.catalogue_resources import DatasetMetadataUpdate, DatasetRecord
from medfed.common.errors import BadRequest
from medfed.sdk.http import HubUnreachable

app = typer.Typer(help="Dataset lifecycle and catalogue search.", no_args_is_help=True)


def _print(record: DatasetRecord) -> None:
    console.print(
        f"dataset {record.id} {record.node_name}/{record.name} v{record.version}: "
        f"{record.label}" + (f" (pid {record.pid})" if record.pid else ""),
        highlight=False,
    )


FIELDS = tuple(DatasetMetadataUpdate.model_fields)
ALIASES = {"licence": "license", "duo": "duo_codes", "individuals": "unique_individuals"}


def _read_file(path: Path) -> dict[str, Any]:
    """A describe file: TOML (``.toml``) or JSON (anything else), one table of fields."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadRequest(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise BadRequest(f"{path} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"{path} must hold one table of fields ({', '.join(FIELDS)})")
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = ALIASES.get(key, key)
        if name not in FIELDS:
            raise BadRequest(f"{path}: unknown field '{key}' (known: {', '.join(FIELDS)})")
        out[name] = value
    return out


def metadata_body(fields: dict[str, Any], source: str) -> dict[str, Any]:
    """``fields`` checked as the hub checks them; one line naming the field if bad."""
    try:
        body = DatasetMetadataUpdate.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise BadRequest(f"{source}: {where}: {message}") from None
    return body.model_dump(exclude_unset=True)


@app.command("describe")
def describe(
    dataset_id: int = typer.Argument(..., help="a draft dataset version's id"),
    file: Path | None = typer.Option(
        None, "--file", "-f", help="TOML (.toml) or JSON file of the fields; options win"
    ),
    title: str | None = typer.Option(None, "--title"),
    description: str | None = typer.Option(None, "--description"),
    keyword: list[str] = typer.Option(
        [], "--keyword", "-k", callback=split_commas, help=comma_help("keyword")
    ),
    theme: list[str] = typer.Option(
        [], "--theme", callback=split_commas, help=comma_help("EU data theme (HEAL, …)")
    ),
    duo: list[str] = typer.Option(
        [], "--duo", callback=split_commas, help=comma_help("DUO code (GRU, HMB, DS:…, IRB, …)")
    ),
    contact: str | None = typer.Option(None, "--contact", help="'Name <e-mail>' or a web address"),
    license_: str | None = typer.Option(
        None, "--license", "--licence", help="SPDX id (CC-BY-4.0, …) or URL"
    ),
    access_rights: str | None = typer.Option(
        None, "--access-rights", help="PUBLIC, RESTRICTED or NON_PUBLIC"
    ),
    access_condition: list[str] = typer.Option(
        [],
        "--access-condition",
        callback=split_commas,
        help=comma_help("DOWNLOAD, IN_SITU_PROCESSING or REMOTE_PROCESSING"),
    ),
    individuals: int | None = typer.Option(
        None, "--individuals", help="number of unique individuals"
    ),
    records: int | None = typer.Option(None, "--records", help="number of records"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Describe a draft: title, description, keywords, themes, DUO codes, contact, licence."""
    fields = _read_file(file) if file is not None else {}
    given: dict[str, Any] = {
        "title": title,
        "description": description,
        "keywords": keyword or None,
        "themes": theme or None,
        "duo_codes": duo or None,
        "contact": contact,
        "license": license_,
        "access_rights": access_rights,
        "access_conditions": access_condition or None,
        "unique_individuals": individuals,
        "records": records,
    }
    fields.update({k: v for k, v in given.items() if v is not None})
    if not fields:
        raise typer.BadParameter(
            "nothing to describe: give --file or at least one field option (--title, …)",
            param_hint="--file",
        )
    source = str(file) if file is not None else "options"
    record = client(url, token).catalogue.update(dataset_id, **metadata_body(fields, source))
    _print(record)
    console.print(f"described: {', '.join(k for k in FIELDS if k in fields)}", highlight=False)


@app.command("wait")
def wait(
    name: list[str] = typer.Argument(..., help="dataset names (or node/name) to wait for"),
    timeout: float = typer.Option(60.0, "--timeout", help="seconds before giving up"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Wait until nodes have registered these datasets (as you may see them)."""
    hub = client(url, token)
    deadline = time.monotonic() + timeout
    missing = list(name)
    while True:
        try:
            found = hub.datasets.list()
        except HubUnreachable:
            if time.monotonic() >= deadline:
                raise
            found = []
        seen = {d.name for d in found} | {f"{d.node_name}/{d.name}" for d in found}
        missing = [n for n in name if n not in seen]
        if not missing:
            break
        if time.monotonic() >= deadline:
            raise BadRequest(
                f"no dataset {', '.join(missing)} after {timeout:g} s: is the node running "
                "(see its log) and may you see its datasets?"
            )
        time.sleep(0.5)
    console.print(f"registered: {', '.join(name)}", highlight=False)


@app.command("release")
def release(dataset_id: int, url: str | None = UrlOption, token: str | None = TokenOption) -> None:
    """draft → released: freeze the metadata; entitled projects may use it."""
    _print(client(url, token).catalogue.release(dataset_id))


@app.command("publish")
def publish(dataset_id: int, url: str | None = UrlOption, token: str | None = TokenOption) -> None:
    """released → published: the metadata becomes public (and gets a DOI if configured)."""
    _print(client(url, token).catalogue.publish(dataset_id))


@app.command("invalidate")
def invalidate(
    dataset_id: int,
    reason: str = typer.Option(..., "--reason", "-r", help="shown on the tombstone"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """released/published → invalidated: never usable again (reachable by its pid)."""
    _print(client(url, token).catalogue.invalidate(dataset_id, reason))


@app.command("reactivate")
def reactivate(
    dataset_id: int, url: str | None = UrlOption, token: str | None = TokenOption
) -> None:
    """invalidated → released (or published, if it had been)."""
    _print(client(url, token).catalogue.reactivate(dataset_id))


@app.command("show")
def show(
    dataset_id: int,
    as_json: bool = typer.Option(False, "--json", help="print the record as JSON"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """A dataset version's catalogue record."""
    record = client(url, token).catalogue.show(dataset_id)
    if as_json:
        console.print_json(record.model_dump_json())
        return
    _print(record)
    rows: list[list[Any]] = [
        ["title", record.title or ""],
        ["description", record.description],
        ["keywords", ", ".join(record.keywords)],
        ["themes", ", ".join(record.themes)],
        ["access rights", record.access_rights],
        ["access conditions", ", ".join(record.access_conditions)],
        ["DUO", ", ".join(record.duo_codes)],
        ["contact", record.contact or ""],
        ["licence", record.license or ""],
        ["rows (rounded)", record.row_count],
        ["manifest root", record.manifest_root or ""],
        ["previous / next", f"{record.previous_id or '-'} / {record.next_id or '-'}"],
    ]
    table(f"dataset {record.id}", ["field", "value"], rows)


@app.command("search")
def search(
    q: str = typer.Argument("", help="words that must all appear"),
    theme: list[str] = typer.Option([], "--theme", callback=split_commas, help=comma_help("theme")),
    keyword: list[str] = typer.Option(
        [], "--keyword", callback=split_commas, help=comma_help("keyword")
    ),
    modality: list[str] = typer.Option(
        [], "--modality", callback=split_commas, help=comma_help("imaging modality (CT, MR, …)")
    ),
    access_rights: list[str] = typer.Option(
        [],
        "--access-rights",
        callback=split_commas,
        help=comma_help("PUBLIC, RESTRICTED or NON_PUBLIC"),
    ),
    duo: list[str] = typer.Option([], "--duo", callback=split_commas, help=comma_help("DUO code")),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Search the catalogue; facets of one kind match any value, kinds are AND-ed."""
    found = client(url, token).catalogue.search(
        q,
        theme=theme,
        keyword=keyword,
        modality=modality,
        access_rights=access_rights,
        duo=duo,
    )
    rows = [
        [d.id, d.node_name, d.name, d.version, d.state, d.title or "", ", ".join(d.duo_codes)]
        for d in found.results
    ]
    table(f"{found.total} dataset(s)", ["id", "node", "name", "v", "state", "title", "DUO"], rows)
    for facet, counts in found.facets.items():
        if counts:
            text = ", ".join(f"{c.value} ({c.count})" for c in counts)
            console.print(f"{facet}: {text}", highlight=False)
