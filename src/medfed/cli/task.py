"""``medfed datasets list``, ``medfed task run ALGORITHM …`` and ``medfed login``.

``task run`` submits one task, waits for its rounds and prints the pooled result and each
node's status. Its parameters come from ``-p KEY=VALUE`` (JSON values; a comma list for a
parameter that is a list, ``-p covariates=age,tsize``) and from the options for the common
ones (``-c/--column``, ``--covariates``, ``--categorical``); the project is ``--project``
or the caller's only project.
"""

from __future__ import annotations

import json
import types
from typing import Any, Union, get_args, get_origin

import typer

from medfed.cli.common import (
    TokenOption,
    UrlOption,
    client,
    comma_help,
    console,
    project_id,
    save_credentials,
    split_commas,
    table,
)
from medfed.cli.mfa import password_login
from medfed.cli.sso import login_sso
from medfed.common.errors import BadRequest

datasets = typer.Typer(help="Datasets in the catalogue.", no_args_is_help=True)
tasks = typer.Typer(help="Federated tasks.", no_args_is_help=True)


@datasets.command("list")
def dataset_list(url: str | None = UrlOption, token: str | None = TokenOption) -> None:
    """List datasets: node, name, version, state (draft, released, …), rows and columns."""
    rows = [
        [
            d.id,
            d.node_name,
            d.name,
            d.version,
            d.state,
            d.row_count,
            ", ".join(c.name for c in d.columns),
        ]
        for d in client(url, token).datasets.list()
    ]
    table("datasets", ["id", "node", "name", "v", "state", "rows (rounded)", "columns"], rows)


def _is_list(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_is_list(arg) for arg in get_args(annotation))
    return False


def _list_params(algorithm: str) -> set[str]:
    """The algorithm's parameters that are lists (empty for an unknown algorithm)."""
    from medfed.algorithms.registry import get_algorithm

    try:
        fields = get_algorithm(algorithm).Params.model_fields
    except BadRequest:
        return set()  # the hub names the known algorithms
    return {name for name, field in fields.items() if _is_list(field.annotation)}


def _parse_param(text: str, lists: set[str]) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise typer.BadParameter(f"'{text}': use KEY=VALUE (VALUE may be JSON)", param_hint="-p")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if key in lists and not isinstance(value, list):
        value = split_commas([value]) if isinstance(value, str) else [value]
    return key, value


@tasks.command("run")
def task_run(
    algorithm: str = typer.Argument(
        ..., help="count, mean, variance, summary, histogram, crosstab, …"
    ),
    dataset: list[str] = typer.Option(
        ...,
        "--dataset",
        "-d",
        callback=split_commas,
        help=comma_help("dataset id, name or node/name"),
    ),
    column: list[str] = typer.Option(
        [], "--column", "-c", callback=split_commas, help=comma_help("columns (mean, summary, …)")
    ),
    covariates: list[str] = typer.Option(
        [], "--covariates", callback=split_commas, help=comma_help("covariates (glm, cox)")
    ),
    categorical: list[str] = typer.Option(
        [], "--categorical", callback=split_commas, help=comma_help("categorical covariates")
    ),
    where: str | None = typer.Option(
        None, "--where", "-w", help='filter, e.g. "age >= 50 and grade == 2"'
    ),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="KEY=VALUE (JSON values; a list as a,b,c), repeatable"
    ),
    project: int | None = typer.Option(
        None, "--project", help="project id (default: your only project)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    plot: str | None = typer.Option(None, "--plot", help="save the result's plot as PNG"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Run an algorithm on datasets and print the pooled result and each node's status."""
    lists = _list_params(algorithm) if param else set()
    params = dict(_parse_param(p, lists) for p in param)
    named = {"columns": column, "covariates": covariates, "categorical": categorical}
    params.update({key: values for key, values in named.items() if values})
    refs: list[int | str] = [int(d) if d.isdigit() else d for d in dataset]
    hub = client(url, token)
    result = hub.tasks.run(
        algorithm, datasets=refs, project=project_id(hub, project), where=where, **params
    )
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
    username: str | None = typer.Option(None, help="prompted for when not given"),
    password: str | None = typer.Option(None, hide_input=True, envvar="MEDFED_PASSWORD"),
    sso: bool = typer.Option(False, "--sso", help="single sign-on (device grant) instead"),
    provider: str | None = typer.Option(None, "--provider", help="with --sso: which one"),
    otp: str | None = typer.Option(None, "--otp", help="TOTP code (asked for when needed)"),
    recovery_code: str | None = typer.Option(None, "--recovery-code", help="instead of --otp"),
) -> None:
    """Log in and keep a token in ~/.config/medfed/credentials.json."""
    if sso:
        login_sso(url, provider)
        return
    username = username or typer.prompt("Username")
    password = password or typer.prompt("Password", hide_input=True)
    session = password_login(url, username, password, otp=otp, recovery_code=recovery_code)
    assert session.token is not None
    save_credentials(url, session.token)
    console.print(f"logged in to {url} as {username}")
