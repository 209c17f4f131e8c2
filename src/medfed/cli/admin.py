"""Create and list organizations, users, projects and nodes."""

from __future__ import annotations

import os
from pathlib import Path

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
from medfed.common.errors import BadRequest

organizations = typer.Typer(help="Organizations (hospitals, institutes).", no_args_is_help=True)
users = typer.Typer(help="Users and their roles.", no_args_is_help=True)
projects = typer.Typer(help="Research projects and their members.", no_args_is_help=True)
nodes = typer.Typer(help="Nodes (one per hospital).", no_args_is_help=True)


@organizations.command("create")
def org_create(name: str, url: str | None = UrlOption, token: str | None = TokenOption) -> None:
    """Create an organization (hub administrator)."""
    org = client(url, token).organizations.create(name)
    console.print(f"organization {org.id}: {org.name}")


@organizations.command("list")
def org_list(url: str | None = UrlOption, token: str | None = TokenOption) -> None:
    """List organizations."""
    rows = [[o.id, o.name] for o in client(url, token).organizations.list()]
    table("organizations", ["id", "name"], rows)


@users.command("create")
def user_create(
    username: str,
    organization: int = typer.Option(..., "--org", help="organization id"),
    role: list[str] = typer.Option(
        ["researcher"],
        "--role",
        callback=split_commas,
        help=comma_help("admin, steward, researcher, dac, auditor"),
    ),
    password: str = typer.Option(..., prompt=True, hide_input=True, envvar="MEDFED_NEW_PASSWORD"),
    email: str | None = typer.Option(None),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Create a user in an organization."""
    user = client(url, token).users.create(
        username, password, organization_id=organization, roles=list(role), email=email
    )
    console.print(f"user {user.id}: {user.username} ({', '.join(user.roles)})")


@users.command("list")
def user_list(url: str | None = UrlOption, token: str | None = TokenOption) -> None:
    """List users you may see."""
    rows = [
        [u.id, u.username, u.organization_id, ", ".join(u.roles)]
        for u in client(url, token).users.list()
    ]
    table("users", ["id", "username", "org", "roles"], rows)


@projects.command("create")
def project_create(
    name: str,
    description: str = typer.Option(""),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Create a project; you become its first member."""
    project = client(url, token).projects.create(name, description)
    console.print(f"project {project.id}: {project.name}")


@projects.command("list")
def project_list(url: str | None = UrlOption, token: str | None = TokenOption) -> None:
    """List your projects."""
    rows = [[p.id, p.name, len(p.members)] for p in client(url, token).projects.list()]
    table("projects", ["id", "name", "members"], rows)


@projects.command("add-member")
def project_add_member(
    project: int, user: int, url: str | None = UrlOption, token: str | None = TokenOption
) -> None:
    """Add a user to a project."""
    result = client(url, token).projects.add_member(project, user)
    console.print(f"project {result.id} members: {result.members}")


@nodes.command("create")
def node_create(
    name: str,
    organization: int = typer.Option(..., "--org", help="organization id"),
    secret_file: Path | None = typer.Option(
        None,
        "--secret-file",
        help="write the node secret to this new file (mode 600) instead of printing it",
    ),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Create a node; its secret is shown once (or written to --secret-file for node.toml)."""
    if secret_file is not None and secret_file.exists():
        raise BadRequest(f"{secret_file} exists already; the node secret needs a new file")
    node = client(url, token).nodes.create(name, organization_id=organization)
    console.print(f"node {node.id}: {node.name}")
    if secret_file is None:
        console.print(f"secret (shown once): {node.secret}")
        return
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(node.secret + "\n")
    console.print(f"secret written to {secret_file} (secret_file in node.toml)")


@nodes.command("list")
def node_list(url: str | None = UrlOption, token: str | None = TokenOption) -> None:
    """List nodes and whether they are online."""
    rows = [
        [n.id, n.name, n.organization_id, "yes" if n.online else "no"]
        for n in client(url, token).nodes.list()
    ]
    table("nodes", ["id", "name", "org", "online"], rows)
