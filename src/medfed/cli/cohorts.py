"""``medfed cohorts …``: saved cohorts (ATLAS JSON) and their gated counts per node.

``import FILE --name NAME`` saves an ATLAS export (checked at the hub: an unknown
construct is named and nothing is stored; a changed definition under the same name is the
next version); ``list`` shows the project's cohorts; ``show ID [--version N]`` one
version with its hash, inclusion rules and concept ids (``--json``: the definition);
``counts ID --datasets …`` runs ``cohort_counts`` and prints each node's gated counts
and attrition. An analysis on a cohort is ``medfed task run cox -d … -p cohort='{"id":
ID}' -p features=@spec.json …`` (docs/omop.md).
"""

from __future__ import annotations

from pathlib import Path

import typer

from medfed.cli.common import (
    TokenOption,
    UrlOption,
    client,
    comma_help,
    console,
    project_id,
    split_commas,
    table,
)

app = typer.Typer(help="Saved cohorts (ATLAS/Circe JSON) and their counts.", no_args_is_help=True)

ProjectOption = typer.Option(None, "--project", help="project id (default: your only project)")


@app.command("import")
def import_cohort(
    path: Path = typer.Argument(..., help="an ATLAS cohort export (JSON)"),
    name: str = typer.Option(..., "--name", help="the cohort's name in the project"),
    description: str = typer.Option("", "--description"),
    project: int | None = ProjectOption,
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Save an ATLAS cohort export (a changed definition becomes the next version)."""
    hub = client(url, token)
    saved = hub.cohorts.import_atlas(
        path, name=name, project=project_id(hub, project), description=description
    )
    what = "saved as" if saved.created else "unchanged:"
    console.print(
        f"cohort {saved.id} '{saved.name}' {what} version {saved.version} "
        f"(sha256 {saved.definition_hash})",
        highlight=False,
    )


@app.command("list")
def list_cohorts(
    project: int | None = ProjectOption,
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """The project's cohorts with their latest version."""
    hub = client(url, token)
    rows = [
        [c.id, c.name, c.version, c.definition_hash[:16]]
        for c in hub.cohorts.list(project_id(hub, project))
    ]
    table("cohorts", ["id", "name", "version", "sha256"], rows)


@app.command("show")
def show_cohort(
    cohort_id: int = typer.Argument(...),
    version: int | None = typer.Option(None, "--version"),
    as_json: bool = typer.Option(False, "--json", help="print the definition as JSON"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """One version of a cohort: hash, inclusion rules, concept ids."""
    found = client(url, token).cohorts.get(cohort_id, version)
    if as_json:
        console.print_json(data=found.definition)
        return
    console.print(
        f"cohort {found.id} '{found.name}' version {found.version} "
        f"(sha256 {found.definition_hash})",
        highlight=False,
    )
    rows = [
        [v.version, v.definition_hash[:16], "; ".join(v.inclusion_rules), len(v.concept_ids)]
        for v in found.versions
    ]
    table("versions", ["version", "sha256", "inclusion rules", "concepts"], rows)


@app.command("counts")
def cohort_counts(
    cohort_id: int = typer.Argument(...),
    datasets: list[str] = typer.Option(
        ..., "--datasets", "-d", callback=split_commas, help=comma_help("OMOP datasets")
    ),
    version: int | None = typer.Option(None, "--version"),
    project: int | None = ProjectOption,
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Each node's gated counts and attrition per inclusion rule."""
    hub = client(url, token)
    refs: list[int | str] = [int(d) if d.isdigit() else d for d in datasets]
    result = hub.cohorts.counts(
        cohort_id, datasets=refs, version=version, project=project_id(hub, project)
    )
    if as_json:
        console.print_json(result.result.model_dump_json())
        return
    console.print(result.summary(), highlight=False, markup=False)
