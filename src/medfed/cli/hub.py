"""``medfed hub init``, ``medfed hub serve`` and ``medfed hub wait``.

``serve`` checks the settings and the database driver (a PostgreSQL URL needs
``medfed[postgres]``) in this process, then hands over to uvicorn, which imports the app
in each worker; its port is ``--port``, else ``MEDFED_PORT``, else 8000. With
``--ssl-certfile``/``--ssl-keyfile`` uvicorn serves HTTPS itself (a small deployment, or
tests of the nodes' certificate pinning; a reverse proxy is the usual way, see
``docs/deployment.md``). ``wait`` polls
the hub's ``/api/health`` until it answers (for a hub started in the background).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import typer

from medfed.cli.common import console
from medfed.common.errors import BadRequest
from medfed.hub.config import HubSettings

app = typer.Typer(help="Run the hub.", no_args_is_help=True)


def _env(data_dir: Path | None, database_url: str | None, dev: bool) -> None:
    if data_dir is not None:
        os.environ["MEDFED_DATA_DIR"] = str(data_dir)
    if database_url is not None:
        os.environ["MEDFED_DATABASE_URL"] = database_url
    if dev:
        os.environ["MEDFED_DEV_MODE"] = "1"


@app.command()
def init(
    admin: str = typer.Option("admin", help="username of the first administrator"),
    password: str = typer.Option(
        ..., prompt=True, hide_input=True, confirmation_prompt=True, envvar="MEDFED_ADMIN_PASSWORD"
    ),
    organization: str = typer.Option("hub", help="the administrator's organization"),
    data_dir: Path | None = typer.Option(None, help="hub data folder (SQLite file lives here)"),
    database_url: str | None = typer.Option(
        None, help="SQLAlchemy URL, e.g. postgresql+psycopg://"
    ),
    dev: bool = typer.Option(False, help="dev mode: allow the default secret key"),
) -> None:
    """Create the database and the first administrator; print its API token once."""
    _env(data_dir, database_url, dev)
    from medfed.hub.bootstrap import init_hub  # the database layer: only this command needs it

    user_id, token = init_hub(
        HubSettings(), organization=organization, username=admin, password=password
    )
    console.print(f"hub initialized; administrator '{admin}' (id {user_id})")
    console.print(f"API token (shown once): {token}")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000, envvar="MEDFED_PORT", help="port (MEDFED_PORT)"),
    workers: int = typer.Option(
        1, min=1, envvar="MEDFED_WORKERS", help="uvicorn worker processes (MEDFED_WORKERS)"
    ),
    data_dir: Path | None = typer.Option(None),
    database_url: str | None = typer.Option(None),
    dev: bool = typer.Option(False),
    log_level: str = typer.Option("warning"),
    ssl_certfile: Path | None = typer.Option(
        None,
        envvar="MEDFED_SSL_CERTFILE",
        help="serve HTTPS with this PEM certificate (chain) (MEDFED_SSL_CERTFILE)",
    ),
    ssl_keyfile: Path | None = typer.Option(
        None, envvar="MEDFED_SSL_KEYFILE", help="its PEM private key (MEDFED_SSL_KEYFILE)"
    ),
) -> None:
    """Serve the hub's API (settings from MEDFED_* variables and these options)."""
    import uvicorn

    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise BadRequest("give both --ssl-certfile and --ssl-keyfile, or neither")
    for tls_file in (ssl_certfile, ssl_keyfile):
        if tls_file is not None and not tls_file.is_file():
            raise BadRequest(f"cannot read {tls_file}: not a file")
    _env(data_dir, database_url, dev)
    from medfed.hub.db.session import make_engine

    # refuse bad settings and a missing database driver with one line before uvicorn starts
    make_engine(HubSettings().effective_database_url).dispose()
    uvicorn.run(
        "medfed.hub.asgi:create",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        # open long polls (up to long_poll_seconds) must not hold up a stop: cancel them
        timeout_graceful_shutdown=2,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
    )


@app.command()
def wait(
    url: str = typer.Option(
        "http://127.0.0.1:8000", "--url", envvar="MEDFED_URL", help="hub URL (MEDFED_URL)"
    ),
    timeout: float = typer.Option(30.0, "--timeout", help="seconds before giving up"),
) -> None:
    """Wait until the hub answers (e.g. after 'medfed hub serve &')."""
    health = url.rstrip("/") + "/api/health"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(health, timeout=2.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() >= deadline:
            raise BadRequest(f"the hub at {url} did not answer within {timeout:g} s")
        time.sleep(0.2)
    console.print(f"hub at {url} is up", highlight=False)
