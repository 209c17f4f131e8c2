"""``medfed access apply|list|submit|approve|reject|return|revoke|close|due|entitlements|…``.

Also ``count`` (discovery) and ``budget`` (a project's query budget).

Each command calls the hub through ``medfed.Client.access`` and prints the application's
state (with the DUO mismatches flagged to the DAC), the applications the caller may see
(``list``: an applicant's own, a DAC's submitted ones), the entitlements, the DAC's due
view, a discovery count, or a project's query budget (which its DAC sets with ``budget``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer

from medfed.cli.common import (
    TokenOption,
    UrlOption,
    client,
    comma_help,
    console,
    ids,
    split_commas,
    table,
)
from medfed.common.access_resources import ApplicationPublic, ApplicationState
from medfed.common.errors import BadRequest

app = typer.Typer(help="Access applications, DAC decisions, entitlements.", no_args_is_help=True)


def _print(application: ApplicationPublic) -> None:
    ends = f", ends {application.ends_at:%Y-%m-%d}" if application.ends_at else ""
    console.print(
        f"application {application.id} (project {application.project_id}, datasets "
        f"{', '.join(str(d) for d in application.dataset_ids)}): {application.state.value}{ends}",
        highlight=False,
    )
    for problem in application.mismatches:
        console.print(f"  [yellow]DUO mismatch:[/yellow] {problem}", highlight=False)


@app.command("apply")
def apply(
    project: int = typer.Option(..., "--project", "-p", help="the applying project's id"),
    dataset: list[str] = typer.Option(
        ..., "--dataset", "-d", help=comma_help("dataset version id")
    ),
    purpose: str = typer.Option(..., "--purpose"),
    ethics: str = typer.Option("", "--ethics", help="ethics approval reference"),
    code: list[str] = typer.Option(
        [], "--code", "-c", callback=split_commas, help=comma_help("intended-use DUO code (HMB, …)")
    ),
    days: int = typer.Option(365, "--days", help="duration asked for"),
    commercial: bool = typer.Option(False, "--commercial"),
    collaboration: str = typer.Option("", "--collaboration", help="collaboration statement"),
    submit: bool = typer.Option(False, "--submit", help="submit at once"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Create a draft application (and submit it with --submit)."""
    dataset_ids = ids(dataset, "--dataset")
    access = client(url, token).access
    application = access.apply(
        project,
        dataset_ids,
        purpose=purpose,
        duration_days=days,
        ethics_reference=ethics,
        codes=code,
        commercial=commercial,
        collaboration_statement=collaboration,
    )
    _print(access.submit(application.id) if submit else application)


@app.command("list")
def list_(
    state: ApplicationState | None = typer.Option(None, "--state", help="only this state"),
    project: int | None = typer.Option(None, "--project", "-p", help="only this project"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Applications you may see: your projects' (any state), or as DAC the submitted ones."""
    found = client(url, token).access.list(state=state.value if state else None, project_id=project)
    table(
        f"{len(found)} application(s)",
        ["id", "project", "datasets", "state", "submitted", "ends", "DUO mismatches"],
        [
            [
                a.id,
                a.project_id,
                ", ".join(str(d) for d in a.dataset_ids),
                a.state.value,
                f"{a.submitted_at:%Y-%m-%d}" if a.submitted_at else "-",
                f"{a.ends_at:%Y-%m-%d}" if a.ends_at else "-",
                len(a.mismatches),
            ]
            for a in found
        ],
    )


@app.command("submit")
def submit(
    application_id: int, url: str | None = UrlOption, token: str | None = TokenOption
) -> None:
    """Submit a draft or returned application to the DAC."""
    _print(client(url, token).access.submit(application_id))


def _end(until: str | None, days: int | None) -> datetime:
    if until:
        try:
            end = datetime.fromisoformat(until)
        except ValueError:
            raise BadRequest(f"--until must be an ISO date, got {until!r}") from None
        return end if end.tzinfo else end.replace(tzinfo=UTC)
    if days:
        return datetime.now(UTC) + timedelta(days=days)
    raise BadRequest("approval needs an end date: --until YYYY-MM-DD or --days N")


@app.command("approve")
def approve(
    application_id: int,
    until: str | None = typer.Option(None, "--until", help="end date (ISO)"),
    days: int | None = typer.Option(None, "--days", help="or: this many days from now"),
    comment: str = typer.Option("", "--comment", "-m"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """DAC: approve with a required end date; entitlements are created."""
    _print(client(url, token).access.approve(application_id, _end(until, days), comment))


@app.command("reject")
def reject(
    application_id: int,
    comment: str = typer.Option("", "--comment", "-m"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """DAC: reject a submitted application."""
    _print(client(url, token).access.reject(application_id, comment))


@app.command("return")
def return_(
    application_id: int,
    comment: str = typer.Option(..., "--comment", "-m", help="what to change"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """DAC: send a submitted application back for changes."""
    _print(client(url, token).access.return_(application_id, comment))


@app.command("revoke")
def revoke(
    application_id: int,
    comment: str = typer.Option("", "--comment", "-m"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """DAC: revoke an approved application; its entitlements end now."""
    _print(client(url, token).access.revoke(application_id, comment))


@app.command("close")
def close(
    application_id: int,
    comment: str = typer.Option("", "--comment", "-m"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Applicant: close an application (an approved one ends its entitlements)."""
    _print(client(url, token).access.close(application_id, comment))


@app.command("entitlements")
def entitlements(
    project: int | None = typer.Option(None, "--project", "-p"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Entitlements you may see (your projects', or your organization's data as DAC)."""
    rows = client(url, token).access.entitlements(project)
    table(
        "entitlements",
        ["id", "project", "dataset", "from", "until", "status"],
        [
            [
                e.id,
                e.project_id,
                e.dataset_id,
                f"{e.starts_at:%Y-%m-%d}",
                f"{e.ends_at:%Y-%m-%d}",
                e.status,
            ]
            for e in rows
        ],
    )


@app.command("due")
def due(url: str | None = UrlOption, token: str | None = TokenOption) -> None:
    """DAC: pending applications with their age; entitlements ending within 30 days."""
    view = client(url, token).access.due()
    table(
        "pending applications",
        ["id", "project", "datasets", "age (days)", "DUO mismatches"],
        [
            [
                d.application.id,
                d.application.project_id,
                ", ".join(str(i) for i in d.application.dataset_ids),
                f"{d.age_days:.1f}",
                len(d.application.mismatches),
            ]
            for d in view.pending
        ],
    )
    table(
        "entitlements ending within 30 days",
        ["id", "project", "dataset", "until"],
        [[e.id, e.project_id, e.dataset_id, f"{e.ends_at:%Y-%m-%d}"] for e in view.ending],
    )


@app.command("count")
def count(
    where: list[str] = typer.Option([], "--where", "-w", help="filter, e.g. 'age >= 50'"),
    boolean: bool = typer.Option(False, "--boolean", help="only whether rows exist"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Count discovery across released datasets (uses one unit of your query budget)."""
    result = client(url, token).access.count(where, granularity="boolean" if boolean else "count")
    table(
        f"discovery query {result.id} ({result.status})",
        ["dataset", "node", "answer"],
        [[d.dataset_name, d.node_name, d.count_text] for d in result.datasets],
    )
    console.print(
        f"total: {result.count_text or '-'}; queries left: {result.budget_left}", highlight=False
    )


@app.command("budget")
def budget(
    project: int = typer.Option(..., "--project", "-p", help="the project's id"),
    tasks: int | None = typer.Option(
        None, "--tasks", min=0, help="DAC: statistical tasks allowed per window"
    ),
    window: float | None = typer.Option(None, "--window", min=0.01, help="DAC: window in hours"),
    default: bool = typer.Option(False, "--default", help="DAC: back to the hub's default"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """A project's query budget; a DAC sets it with --tasks (and --window) or --default."""
    if default and tasks is not None:
        raise BadRequest("give --tasks or --default, not both")
    if window is not None and tasks is None:
        raise BadRequest("--window needs --tasks")
    access = client(url, token).access
    if default or tasks is not None:
        state = access.set_budget(project, None if default else tasks, window_hours=window)
    else:
        state = access.budget(project)
    source = "hub default" if state.default else "set by the DAC"
    resets = (
        f"; next task possible at {state.resets_at:%Y-%m-%d %H:%M:%S} UTC"
        if (state.resets_at is not None)
        else ""
    )
    console.print(
        f"project {state.project_id}: {state.query_budget} tasks per {state.window_hours:g} h "
        f"({source}); used {state.used}, left {state.left}{resets}",
        highlight=False,
    )
