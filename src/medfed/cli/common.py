"""What every CLI command shares: how to reach the hub, and one-line errors.

The hub URL and token come from ``--url``/``--token``, else ``MEDFED_URL``/``MEDFED_TOKEN``,
else the file ``medfed login`` wrote (``~/.config/medfed/credentials.json``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from medfed.sdk.client import Client

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

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
        raise typer.BadParameter(
            "no hub credentials: run 'medfed login' or set MEDFED_URL and MEDFED_TOKEN"
        )
    return Client(url, token, project=project)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    out = Table(title=title)
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*["" if v is None else str(v) for v in row])
    console.print(out)
