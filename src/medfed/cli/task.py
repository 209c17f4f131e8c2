"""``medfed datasets list``, ``medfed task run ALGORITHM …`` and ``medfed login``."""

from __future__ import annotations

import json
from typing import Any

import typer

from medfed.cli.common import TokenOption, UrlOption, client, console, save_credentials, table
from medfed.common.errors import BadRequest
from medfed.sdk.client import Client

datasets = typer.Typer(help="Datasets in the catalogue.", no_args_is_help=True)
tasks = typer.Typer(help="Federated tasks.", no_args_is_help=True)


@datasets.command("list")
def dataset_list(url: str | None = UrlOption, token: str | None = TokenOption) -> None:
    """List datasets, their node, columns and (rounded) row counts."""
    rows = [
        [d.id, d.node_name, d.name, d.row_count, ", ".join(c.name for c in d.columns)]
        for d in client(url, token).datasets.list()
    ]
    table("datasets", ["id", "node", "name", "rows (rounded)", "columns"], rows)


def _parse_param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise BadRequest(f"--param '{text}': use KEY=VALUE (VALUE may be JSON)")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


@tasks.command("run")
def task_run(
    algorithm: str = typer.Argument(
        ..., help="count, mean, variance, summary, histogram, crosstab, …"
    ),
    dataset: list[str] = typer.Option(..., "--dataset", "-d", help="dataset id, name or node/name"),
    column: list[str] = typer.Option(
        [], "--column", "-c", help="columns (mean, variance, summary)"
    ),
    where: str | None = typer.Option(
        None, "--where", "-w", help='filter, e.g. "age >= 50 and grade == 2"'
    ),
    param: list[str] = typer.Option([], "--param", "-p", help="KEY=VALUE (JSON values)"),
    project: int | None = typer.Option(None, "--project"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    plot: str | None = typer.Option(None, "--plot", help="save the result's plot as PNG"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Run an algorithm on datasets and print the pooled result and each node's status."""
    params = dict(_parse_param(p) for p in param)
    if column:
        params["columns"] = list(column)
    refs: list[int | str] = [int(d) if d.isdigit() else d for d in dataset]
    result = client(url, token, project).tasks.run(algorithm, datasets=refs, where=where, **params)
    if plot is not None:
        result.plot(plot)
    if as_json:
        console.print_json(result.result.model_dump_json())
        return
    console.print(
        f"task {result.task_id} ({result.algorithm}) completed in {result.rounds} round(s)"
    )
    console.print(result.summary(), highlight=False, markup=False)
    if plot is not None:
        console.print(f"plot saved to {plot}")
    table("nodes", ["node", "status", "output"], [list(r.values()) for r in result.node_table()])


def login(
    url: str = typer.Option(..., "--url", envvar="MEDFED_URL"),
    username: str = typer.Option(..., prompt=True),
    password: str = typer.Option(..., prompt=True, hide_input=True, envvar="MEDFED_PASSWORD"),
) -> None:
    """Log in and keep a token in ~/.config/medfed/credentials.json."""
    session = Client.login(url, username, password)
    assert session.token is not None
    save_credentials(url, session.token)
    console.print(f"logged in to {url} as {username}")
