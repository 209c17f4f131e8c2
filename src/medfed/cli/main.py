"""The ``medfed`` command: Typer app with one sub-command group per module.

``main()`` builds the command tree, tidies its help (:func:`medfed.cli.usage.tidy_help`)
and runs it without Typer's own error printing. Every error becomes one red line on
stderr, never a traceback: a usage error (unknown option or command, missing argument,
bad value; Typer's vendored click and plain click alike) exits 2 with a pointer to the
command's ``--help``; a medfed error, bad settings or a missing extra (``this needs
medfed[node]: …``) exits 1; Ctrl-C exits 130. Without a terminal nothing prompts: an
option that would is then required like any other. A group named without a command
(``medfed task``) prints its help and exits 0.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import typer
from pydantic import ValidationError
from rich.markup import escape
from typer import _click

from medfed.cli import access, admin, audit, catalogue, cohorts, hub, mfa, node, task, validation
from medfed.cli.common import err_console
from medfed.cli.usage import CLICK_ERRORS, command_path, no_prompts, tidy_help, usage_line
from medfed.common.errors import MedfedError
from medfed.common.extras import missing_extra, require

PROG = "medfed"

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
app.add_typer(cohorts.app, name="cohorts")
app.add_typer(access.app, name="access")
app.command("login")(task.login)
app.add_typer(mfa.app, name="mfa")
app.add_typer(validation.app, name="validation")


@app.command("demo")
def demo(
    csv: Path | None = typer.Option(
        None, "--csv", help="only write the demo's GBSG2 table (686 patients) to this CSV file"
    ),
) -> None:
    """Run the demo federation: a hub and three hospitals sharing GBSG2 (demo extra)."""
    require("demo")
    from medfed.testing.demo import run_demo, write_gbsg2

    if csv is not None:
        rows = write_gbsg2(csv)
        print(f"wrote {rows} rows of GBSG2 (lifelines) to {csv}")
        return
    raise SystemExit(run_demo())


def command() -> _click.Command:
    """The whole command tree, help tidied (what ``main`` runs; tests render its help)."""
    root = typer.main.get_command(app)
    tidy_help(root)
    return root


def _fail(line: str, code: int) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(line)}", highlight=False)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    root = command()
    if sys.stdin is None or not sys.stdin.isatty():
        no_prompts(root)  # a missing password is then "Missing option '--password'"
    try:
        code = root.main(args=args, prog_name=PROG, standalone_mode=False)
    except MedfedError as exc:
        _fail(exc.message, 1)
    except (typer.Abort, KeyboardInterrupt):  # Ctrl-C, or Ctrl-D at a prompt
        err_console.print("aborted")
        sys.exit(130)
    except ValidationError as exc:  # settings from the environment
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        _fail(f"{where + ': ' if where else ''}{message}", 1)
    except _click.exceptions.NoArgsIsHelpError as exc:  # `medfed task`: the help is the answer
        if exc.format_message():  # Typer's rich help printed itself; plain help comes back
            print(exc.format_message())
        sys.exit(0)
    except CLICK_ERRORS as exc:
        _fail(usage_line(exc, command_path(root, args, PROG)), int(getattr(exc, "exit_code", 2)))
    except ModuleNotFoundError as exc:  # an optional part imported where no check was made
        translated = missing_extra(exc)
        if translated is None:
            raise
        _fail(translated.message, 1)
    # without standalone mode, typer.Exit(n) and --help come back as a return value
    if isinstance(code, int) and not isinstance(code, bool) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
