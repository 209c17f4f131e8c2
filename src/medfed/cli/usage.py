"""How the ``medfed`` command talks about its own usage: one-line errors and tidy help.

:func:`usage_line` turns a usage error (unknown option or command, missing argument, bad
value) into one line that ends with where to look, ``see 'medfed task run --help'``.
Typer 0.29 carries its own copy of click (``typer._click``), whose exceptions are not
``click``'s; :data:`CLICK_ERRORS` holds both classes so ``main()`` catches either.

:func:`tidy_help` walks the command tree once before it runs and changes only how
parameters are shown in ``--help``: a flag shows no type (Typer would print ``<bool>`` on
every one) and a list option shows ``<str>…`` (repeat it, or give a comma list).
:func:`no_prompts` is for runs without a terminal: an option that would prompt is then
simply required, and its absence is a usage error that names it.
"""

from __future__ import annotations

from collections.abc import Sequence

from typer import _click
from typer.core import TyperArgument, TyperOption

__all__ = ["CLICK_ERRORS", "command_path", "no_prompts", "tidy_help", "usage_line"]


def _click_errors() -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [_click.exceptions.ClickException]
    try:  # plain click, if something installed it, raises its own
        import click
    except ImportError:  # pragma: no cover - click comes with uvicorn
        return tuple(errors)
    errors.append(click.ClickException)
    return tuple(errors)


CLICK_ERRORS = _click_errors()


def command_path(root: _click.Command, args: Sequence[str], prog_name: str) -> str:
    """The deepest command that ``args`` name (``medfed task run``), options skipped."""
    path, command = [prog_name], root
    for token in args:
        if token.startswith("-"):
            continue
        sub = getattr(command, "commands", {}).get(token)
        if sub is None:
            break
        path.append(token)
        command = sub
    return " ".join(path)


def usage_line(exc: Exception, fallback_path: str) -> str:
    """One line: the error, then where to read how the command is used."""
    format_message = getattr(exc, "format_message", None)
    message = str(format_message() if callable(format_message) else exc).strip()
    message = " ".join(message.split())  # never more than one line
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or fallback_path
    if getattr(exc, "exit_code", 2) != 2:  # not a usage error: the message says it all
        return message
    end = "" if message.endswith((".", "?", "!")) else "."
    return f"{message}{end} See '{path} --help'."


def _tidy(param: object) -> None:
    if not isinstance(param, TyperOption | TyperArgument) or param.metavar is not None:
        return
    if isinstance(param, TyperOption) and param.is_flag:
        param.metavar = ""
    elif getattr(param, "multiple", False):
        param.metavar = "<str>…"


def tidy_help(root: _click.Command) -> None:
    """Flags without ``<bool>``, list options as ``<str>…``, in every command's help."""
    stack = [root]
    while stack:
        command = stack.pop()
        help_option = command.get_help_option(_click.Context(command))
        for param in [*command.params, help_option]:
            _tidy(param)
        stack.extend(getattr(command, "commands", {}).values())


def no_prompts(root: _click.Command) -> None:
    """Options that prompt become plain required options (no terminal to prompt on)."""
    stack = [root]
    while stack:
        command = stack.pop()
        for param in command.params:
            if isinstance(param, TyperOption) and param.prompt:
                param.prompt = None
        stack.extend(getattr(command, "commands", {}).values())
