"""What every CLI command shares: how to reach the hub, list options, tables.

The hub URL and token come from ``--url``/``--token``, else ``MEDFED_URL``/``MEDFED_TOKEN``,
else the file ``medfed login`` wrote (``~/.config/medfed/credentials.json``). A list
option takes repeated options or comma lists (``-c age -c tsize``, ``-c age,tsize``):
:func:`split_commas` is its callback. :func:`project_id` picks the project a command works
in and names ``--project`` when it cannot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from medfed.common.errors import BadRequest, Unauthorized
from medfed.sdk.client import Client

# no emoji codes: a fingerprint such as ``A7:CD:ED`` must not print ``:cd:`` as a disc
console = Console(soft_wrap=True, emoji=False)
err_console = Console(stderr=True, soft_wrap=True, emoji=False)

CREDENTIALS = Path(os.environ.get("MEDFED_CONFIG_DIR", "~/.config/medfed")).expanduser() / (
    "credentials.json"
)

UrlOption = typer.Option(None, "--url", envvar="MEDFED_URL", help="hub URL")
TokenOption = typer.Option(None, "--token", envvar="MEDFED_TOKEN", help="API token")


def save_credentials(url: str, token: str) -> None:
    CREDENTIALS.parent.mkdir(parents=True, exist_ok=True)
    CREDENTIALS.write_text(json.dumps({"url": url, "token": token}))
    CREDENTIALS.chmod(0o600)


def client(url: str | None, token: str | None, project: int | None = None) -> Client:
    saved: dict[str, Any] = {}
    if (url is None or token is None) and CREDENTIALS.exists():
        saved = json.loads(CREDENTIALS.read_text())
    url = url or saved.get("url")
    token = token or saved.get("token")
    if not url or not token:
        raise Unauthorized(
            "no hub credentials: run 'medfed login --url URL' or set MEDFED_URL and MEDFED_TOKEN"
        )
    return Client(url, token, project=project)


def project_id(hub: Client, project: int | None) -> int:
    """``--project`` when given, else the caller's only project; the error names the option."""
    if project is not None:
        return project
    projects = hub.projects.list()
    if len(projects) == 1:
        return projects[0].id
    if not projects:
        raise BadRequest(
            "you belong to no project: create one ('medfed projects create NAME') or ask "
            "its owner to add you, then name it with --project ID"
        )
    named = ", ".join(f"{p.id} ({p.name})" for p in projects)
    raise BadRequest(
        f"you belong to {len(projects)} projects ({named}); name one with --project ID"
    )


def split_commas(values: list[str] | None) -> list[str]:
    """Callback of list options: ``-c a -c b,c`` gives ``["a", "b", "c"]``."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def ids(values: list[str], option: str) -> list[int]:
    """Whole numbers from a list option (``-d 3,4``); a bad one is a usage error."""
    out: list[int] = []
    for value in split_commas(values):
        if not value.isdigit():
            raise typer.BadParameter(f"'{value}' is not an id (a whole number)", param_hint=option)
        out.append(int(value))
    return out


def comma_help(text: str) -> str:
    return f"{text}; repeat the option or give a comma list"


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    out = Table(title=title)
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*["" if v is None else str(v) for v in row])
    console.print(out)
