"""``medfed datasets release|publish|invalidate|reactivate|show|search``: the catalogue.

Each command calls the hub through ``medfed.Client.catalogue`` and prints the dataset's
state, version and pid (or, for ``search``, the matching datasets and the facet counts).
"""

from __future__ import annotations

from typing import Any

import typer

from medfed.cli.common import (
    TokenOption,
    UrlOption,
    client,
    comma_help,
    console,
    split_commas,
    table,
)
from medfed.common.catalogue_resources import DatasetRecord

app = typer.Typer(help="Dataset lifecycle and catalogue search.", no_args_is_help=True)


def _print(record: DatasetRecord) -> None:
    console.print(
        f"dataset {record.id} {record.node_name}/{record.name} v{record.version}: "
        f"{record.label}" + (f" (pid {record.pid})" if record.pid else ""),
        highlight=False,
    )


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
