"""The ``medfed`` command: Typer app with one sub-command group per module.

``main()`` turns every medfed error (and a few common ones) into one red line on stderr
and exit code 1, never a traceback.
"""

from __future__ import annotations

import sys

import click
import typer
from pydantic import ValidationError

from medfed.cli import access, admin, audit, catalogue, hub, node, task
from medfed.cli.common import err_console
from medfed.common.errors import MedfedError

app = typer.Typer(
    help="medfed: federated analysis of medical data where it lives.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(hub.app, name="hub")
app.add_typer(node.app, name="node")
app.add_typer(admin.organizations, name="organizations")
app.add_typer(admin.users, name="users")
app.add_typer(admin.projects, name="projects")
app.add_typer(admin.nodes, name="nodes")
# one group for datasets: listing (task.py) and lifecycle/catalogue commands (catalogue.py)
task.datasets.registered_commands.extend(catalogue.app.registered_commands)
app.add_typer(task.datasets, name="datasets")
app.add_typer(task.tasks, name="task")
app.add_typer(audit.app, name="audit")
app.add_typer(access.app, name="access")
app.command("login")(task.login)


@app.command("demo")
def demo() -> None:
    """Run the demo federation: a hub and three hospitals sharing GBSG2."""
    from medfed.testing.demo import run_demo

    raise SystemExit(run_demo())


def main() -> None:
    try:
        app(standalone_mode=False)
    except MedfedError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}", highlight=False)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except ValidationError as exc:  # settings from the environment
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        err_console.print(f"[red]error:[/red] {where + ': ' if where else ''}{message}")
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
