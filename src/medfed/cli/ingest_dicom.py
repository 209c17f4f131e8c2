"""``medfed node ingest dicom SRC --dataset NAME --config node.toml [--option ...]``.

How it runs: reads ``node.toml`` for the node secret (every keyed UID, pseudonym and date
offset derives from it), ``data_dir`` and ``policy.min_cell_count``, then calls
:func:`medfed.node.ingest.dicom.runner.ingest_dicom` with a progress bar (it writes the
outputs, the per-series verification reports and ``index.parquet``), writes the catalogue
summary ``index.parquet.summary.json`` beside the index, and prints the summary: files
done, skipped (already done by an earlier run with the same settings), quarantined with
their reasons, and leaks. Exit code 0 when no leak was found, 1 when the
verifier found one (the leaking outputs are in the quarantine folder), 1 with one red line
for bad input (unknown option, unreadable rectangles file, missing source). pydicom (and
nibabel for ``--nifti``) are imported when the command runs: without them it says
``this needs medfed[node]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from medfed.cli.common import comma_help, console, err_console, split_commas
from medfed.common.errors import BadRequest
from medfed.common.extras import needed, require
from medfed.node.config import load_config
from medfed.node.ingest.dicom.profile import Option

if TYPE_CHECKING:
    from medfed.node.ingest.dicom.runner import IngestSummary

app = typer.Typer(help="Ingest raw exports into de-identified datasets.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Ingest raw exports into de-identified datasets (``dicom``; ``table`` elsewhere)."""


_OPTIONS_HELP = comma_help("profile option: " + ", ".join(o.value for o in Option))


@app.command("dicom")
def dicom(
    src: Path = typer.Argument(..., help="folder (or file) of raw DICOM; only read"),
    dataset: str = typer.Option(..., "--dataset", help="dataset name"),
    config: Path = typer.Option(..., "--config", "-c", help="path to node.toml"),
    profile: str = typer.Option("basic", "--profile", help="confidentiality profile"),
    option: list[str] = typer.Option(
        [], "--option", "-o", callback=split_commas, help=_OPTIONS_HELP
    ),
    rectangles: Path | None = typer.Option(
        None, "--rectangles", help="TOML/JSON: pixel-cleaning rectangles per device"
    ),
    out: Path | None = typer.Option(
        None, "--out", help="output folder (default: <data_dir>/datasets/<dataset>)"
    ),
    workers: int = typer.Option(os.cpu_count() or 1, "--workers", "-j", min=1),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    nifti: Path | None = typer.Option(
        None, "--nifti", help="also convert CT/MR series to NIfTI in a BIDS-like layout here"
    ),
) -> None:
    """De-identify DICOM by PS3.15 Annex E (Basic Profile + options), verify, index."""
    if profile.strip().lower() != "basic":
        raise BadRequest(f"unknown profile {profile!r}: only 'basic' (with --option) exists")
    require("node", "pydicom", "pyarrow", *(["nibabel"] if nifti is not None else []))
    with needed("node"):
        from medfed.node.ingest.dicom.burned import load_rectangles
        from medfed.node.ingest.dicom.runner import ingest_dicom

    node = load_config(config)
    target = out or node.data_dir / "datasets" / dataset
    rects = load_rectangles(rectangles) if rectangles is not None else None
    summary = ingest_dicom(
        src,
        target,
        secret=node.node_secret(),
        options=option,
        rectangles=rects,
        workers=workers,
        progress=not quiet,
    )
    print_summary(summary)
    if summary.index_files:
        catalogue = _write_catalogue(summary, node.policy.min_cell_count)
        console.print(
            f"index: {summary.index_files[0]}  (dataset path for node.toml)"
            + (f"\ncatalogue summary: {catalogue}" if catalogue else ""),
            highlight=False,
        )
    if summary.verification is not None:
        console.print(f"verification reports: {summary.out / 'verification'}", highlight=False)
    if nifti is not None and summary.ok:
        with needed("node"):
            from medfed.node.ingest.dicom.nifti import convert_index
        converted = convert_index(summary.index_rows, nifti, dicom_root=summary.out)
        console.print(
            f"NIfTI: {len(converted['written'])} series written to {nifti}, "
            f"{len(converted['skipped'])} skipped",
            highlight=False,
        )
    if not summary.ok:
        err_console.print(
            f"[red]error:[/red] the verifier found identifying values in {len(summary.leaks)} "
            f"output(s); they were moved to {summary.quarantine / 'leaks'}"
        )
        raise typer.Exit(1)


def _write_catalogue(summary: IngestSummary, min_cell_count: int) -> Path | None:
    """``<index>.summary.json``: the aggregates the node sends to the hub's catalogue."""
    from medfed.node.ingest.dicom.summary import summarize, write_summary  # pandas: only here

    aggregates = summarize(summary.index_rows, min_cell_count=min_cell_count)
    return write_summary(aggregates, summary.index_files[0])


def print_summary(summary: IngestSummary) -> None:
    console.print(
        f"dataset {summary.out}: {summary.done} done, {summary.skipped} skipped (already done), "
        f"{len(summary.quarantined)} quarantined, {len(summary.leaks)} leaking, "
        f"{summary.seconds:.1f} s ({summary.files_per_second:.0f} files/s)",
        highlight=False,
    )
    if summary.quarantined:
        console.print(f"quarantine: {summary.quarantine}", highlight=False)
        for reason, count in summary.reasons().most_common():
            console.print(f"  {count:6d}  {reason}", highlight=False)
    for source, findings in summary.leaks:
        console.print(f"[red]leak[/red] {source}: {len(findings)} finding(s)", highlight=False)
        for finding in findings[:5]:
            console.print(f"    {finding}", highlight=False)
