"""``medfed validation …``: validate an ONNX model on each site's own patients.

Researchers (a vendor or a clinic): ``upload`` streams an ONNX file and registers it
(checked at the hub without running it; ``--image-shape C,H,W`` with ``--window`` and
``--mean``/``--std`` declares an image model), ``create`` (``--labels DATASET[:KEY]``
joins an imaging index to a labels table) starts a study on datasets with an
outcome, thresholds and subgroups, ``show`` prints its status and results, ``report``
writes the study's HTML report (ROC, calibration, subgroups, the models x sites matrix),
``recalibrate`` registers a completed study's weak recalibration as a new model.
Stewards: ``consent`` records at the node (``DATA_DIR/validation/consents.json``) that
this site takes part in a *shared* study and whether its own results may be shown to
the study's owner; ``--withdraw`` removes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from medfed.cli.common import (
    TokenOption,
    UrlOption,
    client,
    comma_help,
    console,
    project_id,
    split_commas,
)
from medfed.common.errors import BadRequest
from medfed.common.filter_text import parse_filter_text
from medfed.common.filters import filter_to_json

app = typer.Typer(help="Validate ONNX models on each site's patients.", no_args_is_help=True)

ProjectOption = typer.Option(None, "--project", help="project id (default: your only project)")


def _value(text: str) -> bool | int | float | str:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _subgroup(spec: str) -> dict[str, Any]:
    """``name=column`` or ``name=column:50,65`` (bands of a numeric column)."""
    if "=" not in spec:
        raise typer.BadParameter(f"'{spec}' is not name=column[:bands]", param_hint="--subgroup")
    name, rest = spec.split("=", 1)
    column, _, bands = rest.partition(":")
    out: dict[str, Any] = {"name": name.strip(), "column": column.strip()}
    if bands:
        try:
            out["bands"] = [float(b) for b in bands.split(",")]
        except ValueError:
            raise typer.BadParameter(f"bad bands in '{spec}'", param_hint="--subgroup") from None
    return out


def _numbers(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"'{text}' is not a list of numbers", param_hint=option) from None


def _image(
    shape: str | None, window: str | None, mean: str | None, std: str | None
) -> dict[str, Any] | None:
    """The image spec from ``--image-shape C,H,W [--window C,W --mean M --std S]``."""
    if shape is None:
        if window or mean or std:
            raise BadRequest("--window, --mean and --std go with --image-shape")
        return None
    dims = _numbers(shape, "--image-shape") or []
    spec: dict[str, Any] = {"shape": [int(d) for d in dims]}
    center_width = _numbers(window, "--window")
    if center_width is not None:
        if len(center_width) != 2:
            raise typer.BadParameter("give the window as CENTER,WIDTH", param_hint="--window")
        spec["window"] = {"center": center_width[0], "width": center_width[1]}
    for key, value in (("mean", _numbers(mean, "--mean")), ("std", _numbers(std, "--std"))):
        if value is not None:
            spec[key] = value
    return spec


@app.command("upload")
def upload(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="the ONNX file"),
    name: str = typer.Option(..., "--name", help="the model's name in the project"),
    features: list[str] = typer.Option(
        [], "--features", "-f", callback=split_commas, help=comma_help("input columns, in order")
    ),
    image_shape: str | None = typer.Option(
        None, "--image-shape", help="an image model's input C,H,W (instead of --features)"
    ),
    window: str | None = typer.Option(None, "--window", help="intensity window CENTER,WIDTH"),
    mean: str | None = typer.Option(None, "--mean", help="per-channel mean (after [0, 1])"),
    std: str | None = typer.Option(None, "--std", help="per-channel standard deviation"),
    output: str = typer.Option(..., "--output", help="the model output holding the scores"),
    positive_index: int = typer.Option(1, "--positive-index", help="column of the positive class"),
    derived_from: int | None = typer.Option(
        None, "--derived-from", help="registry model (training) this file exports"
    ),
    project: int | None = ProjectOption,
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Upload an ONNX model (checked at the hub, never run there)."""
    hub = client(url, token)
    model = hub.validation.upload(
        path,
        name=name,
        features=features,
        output=output,
        positive_index=positive_index,
        derived_from=derived_from,
        project=project_id(hub, project),
        image=_image(image_shape, window, mean, std),
    )
    console.print(f"model {model.id} '{model.name}' sha256 {model.sha256}", highlight=False)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="the study's name"),
    model: int = typer.Option(..., "--model", help="validation model id"),
    datasets: list[str] = typer.Option(
        ..., "--dataset", "-d", callback=split_commas, help=comma_help("dataset ids or names")
    ),
    outcome_column: str | None = typer.Option(None, "--outcome-column"),
    positive: str | None = typer.Option(None, "--positive", help="the outcome's positive value"),
    outcome_where: str | None = typer.Option(
        None, "--outcome-where", help='positive rows as a filter, e.g. "cens == 1"'
    ),
    where: str | None = typer.Option(None, "--where", help="test population filter"),
    thresholds: list[str] = typer.Option(
        ["0.5"], "--threshold", "-t", callback=split_commas, help=comma_help("thresholds")
    ),
    subgroups: list[str] = typer.Option(
        [], "--subgroup", "-s", help="name=column or name=column:50,65 (repeat)"
    ),
    mode: str = typer.Option("private", "--mode", help="private or shared"),
    labels: str | None = typer.Option(
        None, "--labels", help="image models: the node's labels table DATASET[:KEY]"
    ),
    project: int | None = ProjectOption,
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Start a validation study."""
    if outcome_where is not None:
        f = parse_filter_text(outcome_where)
        outcome: dict[str, Any] = {"where": filter_to_json(f) if f is not None else None}
    elif outcome_column is not None and positive is not None:
        outcome = {"column": outcome_column, "positive": _value(positive)}
    else:
        raise BadRequest("give --outcome-column with --positive, or --outcome-where")
    extra: dict[str, Any] = {
        "thresholds": [float(t) for t in thresholds],
        "subgroups": [_subgroup(s) for s in subgroups],
    }
    if where is not None:
        f = parse_filter_text(where)
        extra["where"] = filter_to_json(f) if f is not None else None
    if labels is not None:
        table, _, key = labels.partition(":")
        extra["labels"] = {"dataset": table, **({"key": key} if key else {})}
    hub = client(url, token)
    refs: list[int | str] = [int(d) if d.isdigit() else d for d in datasets]
    study = hub.validation.create(
        name,
        model=model,
        datasets=refs,
        outcome=outcome,
        mode=mode,
        project=project_id(hub, project),
        **extra,
    )
    console.print(f"study {study.id} ({study.mode}) task {study.task_id}", highlight=False)


@app.command("show")
def show(
    study_id: int = typer.Argument(...),
    as_json: bool = typer.Option(False, "--json", help="print the whole study as JSON"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """A study's status, each site's run and the pooled results."""
    from medfed.algorithms.validation.results import ValidationResult

    study = client(url, token).validation.get(study_id)
    if as_json:
        print(json.dumps(study.model_dump(mode="json"), indent=2))
        return
    console.print(f"study {study.id} '{study.name}' ({study.mode}): {study.status}")
    for run in study.runs:
        console.print(f"  {run.site}: {run.status} {run.output_status or ''} {run.error or ''}")
    if study.error:
        console.print(f"error: {study.error}", highlight=False)
    if study.result is not None:
        console.print(ValidationResult.model_validate(study.result).summary(), highlight=False)


@app.command("report")
def report(
    study_id: int = typer.Argument(...),
    out: Path = typer.Option(Path("validation-report.html"), "--out", "-o"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Write the study's report (the web page's figures and tables) as one HTML file."""
    from medfed.hub.web.validation_pages import render_report

    study = client(url, token).validation.get(study_id)
    out.write_text(render_report(study))
    console.print(f"wrote {out}", highlight=False)


@app.command("recalibrate")
def recalibrate(
    study_id: int = typer.Argument(..., help="a completed study"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """Register the study's model, recalibrated by the study's pooled fit, as a new model."""
    model = client(url, token).validation.recalibrate(study_id)
    fit = model.provenance or {}
    console.print(
        f"model {model.id} '{model.name}' sha256 {model.sha256} "
        f"(output '{model.output.name}': expit({fit.get('intercept')} + "
        f"{fit.get('slope')} * logit p))",
        highlight=False,
    )


@app.command("consent")
def consent(
    study_id: int | None = typer.Argument(None, help="the shared study's id"),
    config: Path = typer.Option(..., "--config", "-c", help="path to node.toml"),
    model: str | None = typer.Option(
        None, "--model", help="instead of a study: every shared study of this model (SHA-256)"
    ),
    share_site: bool = typer.Option(
        False, "--share-site", help="let the study's owner see this site's own results"
    ),
    withdraw: bool = typer.Option(False, "--withdraw", help="remove this site's consent"),
    by: str = typer.Option("steward", "--by", help="who decides (kept in the file)"),
) -> None:
    """(Steward) take part in a shared study (or every study of a model), or withdraw."""
    from medfed.node.config import load_config
    from medfed.node.executors.onnx_consent import ConsentStore

    if (study_id is None) == (model is None):
        raise BadRequest("name one study (its id) or one model (--model SHA256)")
    what = f"study {study_id}" if study_id is not None else f"model {model}"
    store = ConsentStore(load_config(config).data_dir)
    if withdraw:
        found = store.withdraw(study_id, model=model)
        console.print(f"{what}: consent {'withdrawn' if found else 'was not given'}")
        return
    store.give(study_id, model=model, share_site=share_site, by=by)
    shown = "shown to the owner" if share_site else "pooled only"
    console.print(f"{what}: this site takes part ({shown})", highlight=False)
