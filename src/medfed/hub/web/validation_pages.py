"""Pages of validation studies: the study's report, its download, the project's matrix.

* ``GET /validation/{id}`` — status and each site's run; when done: the ROC curve, the
  calibration plot (bins by area, the recalibration curve), the subgroup forest plot
  (AUC with its interval per subgroup level and per site that shares its results),
  tables of the thresholds' statistics with their intervals, the calibration intercept
  and slope, and the project's models x sites matrix. Every figure states its n.
* ``GET /validation/{id}/report.html`` — the same content as one self-contained HTML file
  (``medfed validation report`` writes the same from the SDK's copy of the study).
* ``GET /projects/{id}/validation`` — the project's studies and the matrix.

Visibility is the service's (:func:`medfed.hub.services.validation.get_study`): a private
study exists only for members of its organization.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup
from sqlalchemy.orm import Session

from medfed.algorithms.validation.resources import StudyPublic
from medfed.hub.api.deps import SessionDep
from medfed.hub.api.routes.validation import study_public
from medfed.hub.db.models import User
from medfed.hub.db.models_validation import OnnxModel
from medfed.hub.services import projects
from medfed.hub.services import validation as service
from medfed.hub.web.session import PageRoute, VisitorDep, render
from medfed.hub.web.validation_figures import calibration_svg, forest_svg, roc_svg

__all__ = ["matrix", "render_report", "router", "study_context"]

router = APIRouter(route_class=PageRoute, include_in_schema=False)
_REPORT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
)


def study_context(study: StudyPublic, grid: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the page and the report show (figures as SVG markup)."""
    result = study.result
    context: dict[str, Any] = {"study": study, "result": result, "matrix": grid}
    if result is None:
        return context
    overall = result["overall"]
    rows: list[tuple[str, dict[str, Any]]] = [("all sites", overall)]
    for name, group in result["subgroups"].items():
        for level, summary in group["levels"].items():
            rows.append((f"{name}: {level}", summary))
    labels = {r.dataset_id: r.site for r in study.runs}
    for site in result["sites"]:
        if site["summary"] is not None:
            rows.append(
                (f"site {labels.get(site['dataset_id'], site['dataset_id'])}", site["summary"])
            )
    context.update(
        roc=Markup(roc_svg(overall)),
        calibration=Markup(calibration_svg(overall, result.get("recalibration"))),
        forest=Markup(forest_svg(rows)),
        rows=rows,
        labels=labels,
    )
    return context


def matrix(session: Session, user: User, project_id: int) -> dict[str, Any]:
    """Models x sites: the AUC each study found per shared site, and pooled."""
    sites: dict[int, str] = {}
    cells: dict[str, dict[Any, str]] = {}
    for study in service.list_studies(session, user=user, project_id=project_id):
        public = study_public(session, study)
        if public.result is None:
            continue
        model = session.get(OnnxModel, study.model_id)
        row = cells.setdefault(f"{model.name if model else study.model_id} ({study.name})", {})
        auc = public.result["overall"].get("auc")
        row["pooled"] = f"{auc['estimate']:.3f}" if auc else "-"
        labels = {r.dataset_id: r.site for r in public.runs}
        for site in public.result["sites"]:
            sites.setdefault(site["dataset_id"], labels.get(site["dataset_id"], "?"))
            summary = site["summary"]
            if summary is not None and summary.get("auc"):
                row[site["dataset_id"]] = f"{summary['auc']['estimate']:.3f}"
            elif site["status"] == "ok":
                row[site["dataset_id"]] = "pooled only"
            else:
                row[site["dataset_id"]] = "withheld"
    return {"sites": sorted(sites.items()), "rows": cells}


def render_report(study: StudyPublic, grid: dict[str, Any] | None = None) -> str:
    """The study as one self-contained HTML file."""
    return _REPORT.get_template("validation_report.html").render(study_context(study, grid))


def _study(session: Session, user: User, study_id: int) -> StudyPublic:
    return study_public(session, service.get_study(session, user=user, study_id=study_id))


@router.get("/validation/{study_id}")
def study_page(
    study_id: int, request: Request, visitor: VisitorDep, session: SessionDep
) -> Response:
    user = visitor.require()
    study = _study(session, user, study_id)
    context = study_context(study, matrix(session, user, study.project_id))
    return render(request, "validation_study.html", context)


@router.get("/validation/{study_id}/report.html")
def study_report(study_id: int, visitor: VisitorDep, session: SessionDep) -> Response:
    user = visitor.require()
    study = _study(session, user, study_id)
    html = render_report(study, matrix(session, user, study.project_id))
    name = f"validation-study-{study_id}.html"
    return Response(
        html,
        media_type="text/html",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/projects/{project_id}/validation")
def project_studies(
    project_id: int, request: Request, visitor: VisitorDep, session: SessionDep
) -> Response:
    user = visitor.require()
    project = projects.get_project(session, project_id=project_id, user=user)
    studies = [
        study_public(session, s)
        for s in service.list_studies(session, user=user, project_id=project_id)
    ]
    context = {"project": project, "studies": studies, "matrix": matrix(session, user, project_id)}
    return render(request, "validation_list.html", context)
