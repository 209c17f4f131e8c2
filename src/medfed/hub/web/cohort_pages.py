"""Pages of a project's saved cohorts: list, import an ATLAS export, counts, run on it.

Every page calls the same services as the JSON API (:mod:`medfed.hub.services.cohorts`,
``tasks.create_task``); nothing here checks a definition or a task a second way.

* ``GET /projects/{id}/cohorts`` — the project's cohorts (latest version, hash, created).
* ``GET /projects/{id}/cohorts/new`` and ``POST /projects/{id}/cohorts`` — import an ATLAS
  JSON file (upload) or pasted JSON under a name; the same name with a changed definition
  adds a version. A refusal (bad JSON, an unknown Circe construct, …) shows the form again
  with the service's message; nothing is stored.
* ``GET /cohorts/{id}?version=&task=`` — the definition in words
  (:mod:`medfed.hub.web.cohort_views`), its versions, the JSON (folded), the latest (or
  the named) ``cohort_counts`` task of the cohort as a table per node with the attrition
  per inclusion rule and its bars, and the run-an-analysis form on the cohort.
* ``POST /cohorts/{id}/counts`` — a ``cohort_counts`` task on the project's usable OMOP
  datasets; back to the cohort page, whose counts fragment
  (``GET /cohorts/{id}/counts/{task}``) re-requests itself every second while it runs.
* ``GET /cohorts/{id}/run-form`` and ``POST /cohorts/{id}/tasks`` — the generated form
  (:mod:`medfed.hub.web.param_form`) with ``cohort=`` preselected as ``id/version`` and a
  feature specification (JSON) whose variables fill the column pickers; the post goes to
  ``tasks.create_task`` with ``cohort`` and ``features`` beside the algorithm's fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response
from sqlalchemy.orm import Session

from medfed.algorithms.cohorts.circe import MAX_DEFINITION_BYTES
from medfed.algorithms.cohorts.counts import CohortCountsResult
from medfed.algorithms.cohorts.features import FeatureSpec
from medfed.algorithms.registry import algorithm_names, get_algorithm
from medfed.common.errors import BadRequest, MedfedError, NotFound
from medfed.common.resources import TaskStatus
from medfed.hub.api.deps import NotifierDep, SessionDep, SettingsDep
from medfed.hub.api.routes.tasks import task_public
from medfed.hub.db.models import Dataset, Task, User
from medfed.hub.db.models_cohorts import Cohort, CohortVersion
from medfed.hub.dispatch import commit
from medfed.hub.services import cohorts, projects, tasks
from medfed.hub.web import catalogue_views, cohort_views, task_views
from medfed.hub.web.param_form import params_from_form, run_form
from medfed.hub.web.session import CheckedVisitor, PageRoute, VisitorDep, redirect, render
from medfed.hub.web.task_pages import PostedForm

router = APIRouter(route_class=PageRoute, include_in_schema=False)

COUNTS = "cohort_counts"
DEFAULT_ANALYSIS = "km"
DEFAULT_FEATURES = '{"age": true, "sex": true}'


# ------------------------------------------------------------------ list and import


@router.get("/projects/{project_id}/cohorts")
def cohort_list(
    project_id: int, request: Request, visitor: VisitorDep, session: SessionDep
) -> Response:
    user = visitor.require()
    project = projects.get_project(session, project_id=project_id, user=user)
    found = cohorts.list_cohorts(session, user=user, project_id=project_id)
    return render(request, "cohorts.html", {"project": project, "cohorts": found})


def _import_page(
    request: Request,
    session: Session,
    user: User,
    project_id: int,
    values: Mapping[str, str],
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    project = projects.get_project(session, project_id=project_id, user=user)
    context = {"project": project, "values": values, "import_error": error}
    return render(request, "cohort_import.html", context, status_code=status_code)


@router.get("/projects/{project_id}/cohorts/new")
def cohort_import_form(
    project_id: int, request: Request, visitor: VisitorDep, session: SessionDep, name: str = ""
) -> Response:
    user = visitor.require()
    return _import_page(request, session, user, project_id, {"name": name})


async def _uploaded(file: UploadFile | None) -> str | None:
    """The uploaded file's text; None when no file was chosen."""
    if file is None or not file.filename:
        return None
    data = await file.read(MAX_DEFINITION_BYTES + 1)
    if len(data) > MAX_DEFINITION_BYTES:
        raise BadRequest(f"the file is over {MAX_DEFINITION_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest(f"the file {file.filename!r} is not UTF-8 text (an ATLAS JSON)") from None


@router.post("/projects/{project_id}/cohorts")
async def cohort_import(
    project_id: int,
    request: Request,
    visitor: CheckedVisitor,
    session: SessionDep,
    name: Annotated[str, Form(max_length=200)] = "",
    description: Annotated[str, Form(max_length=5000)] = "",
    definition: Annotated[str, Form(max_length=MAX_DEFINITION_BYTES)] = "",
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    user = visitor.require()
    values = {"name": name, "description": description, "definition": definition}
    try:
        text = await _uploaded(file)
        if text is not None and definition.strip():
            raise BadRequest("choose a file or paste the JSON, not both")
        raw = text if text is not None else definition
        if not name.strip():
            raise BadRequest("name: give the cohort a name")
        if not raw.strip():
            raise BadRequest("choose an ATLAS JSON file or paste the cohort definition")
        cohort, version, _created = cohorts.import_cohort(
            session,
            user=user,
            project_id=project_id,
            name=name.strip(),
            description=description,
            raw_definition=raw,
        )
    except MedfedError as exc:
        session.rollback()
        return _import_page(
            request, session, user, project_id, values, exc.message, exc.status_code
        )
    session.commit()
    return redirect(f"/cohorts/{cohort.id}?version={version.version}")


# ------------------------------------------------------------------ the cohort page


def _omop_datasets(session: Session, user: User, project_id: int) -> list[Dataset]:
    usable = catalogue_views.usable_datasets(session, user=user, project_id=project_id)
    return [d for d in usable if cohorts.is_omop(d)]


def _counts_tasks(session: Session, user: User, cohort: Cohort) -> list[Task]:
    """The cohort's ``cohort_counts`` tasks, newest first."""
    found = tasks.list_tasks(session, user=user, project_id=cohort.project_id)
    return [
        t
        for t in reversed(found)
        if t.algorithm == COUNTS and (t.params.get("cohort") or {}).get("id") == cohort.id
    ]


def _counts_context(session: Session, user: User, cohort: Cohort, task: Task) -> dict[str, Any]:
    public = task_public(session, task)
    table = svg = None
    if public.status == TaskStatus.completed and public.result is not None:
        result = CohortCountsResult.model_validate(public.result)
        table = cohort_views.counts_table(
            result, task_views.dataset_labels(session, public.dataset_ids)
        )
        svg = cohort_views.attrition_svg(table)
    labels = task_views.dataset_labels(session, public.dataset_ids)
    return {
        "cohort": cohort,
        "counts_task": public,
        "counts_version": (public.params.get("cohort") or {}).get("version"),
        "counts_running": public.status == TaskStatus.running,
        "counts_table": table,
        "attrition_svg": svg,
        "counts_notes": [
            note for row in task_views.node_rows(public.runs, labels) for note in row.notes
        ],
    }


def _counts_of(session: Session, user: User, cohort: Cohort, task_id: int | None) -> dict[str, Any]:
    """The counts of task ``task_id`` (one that counts this cohort), else of the latest."""
    if task_id is not None:
        task = tasks.get_task(session, task_id=task_id, user=user)
        if task.algorithm != COUNTS or (task.params.get("cohort") or {}).get("id") != cohort.id:
            raise NotFound(f"task {task_id} does not count cohort {cohort.id}")
        return _counts_context(session, user, cohort, task)
    latest = next(iter(_counts_tasks(session, user, cohort)), None)
    return _counts_context(session, user, cohort, latest) if latest is not None else {}


def _run_fields(
    algorithm: str | None, features: str, submitted: Mapping[str, Sequence[str]] | None
) -> dict[str, Any]:
    """The generated form of ``algorithm``; the pickers list the features' variables."""
    names = [n for n in algorithm_names() if n != COUNTS]
    name = algorithm if algorithm in names else DEFAULT_ANALYSIS
    try:
        spec = FeatureSpec.model_validate(json.loads(features) if features.strip() else {})
        columns = cohorts.feature_columns(spec)
    except ValueError:  # bad JSON or a bad specification (pydantic's error is one)
        columns = []  # the post names the problem (the same service's message)
    return {
        "algorithm_choices": [(n, get_algorithm(n).summary) for n in names],
        "form": run_form(get_algorithm(name), columns, submitted),
    }


def _cohort_context(
    session: Session,
    user: User,
    cohort_id: int,
    version: int | None = None,
    task_id: int | None = None,
) -> dict[str, Any]:
    cohort, chosen = cohorts.get_cohort(session, user=user, cohort_id=cohort_id, version=version)
    project = projects.get_project(session, project_id=cohort.project_id, user=user)
    versions: list[CohortVersion] = cohorts.versions_of(session, cohort.id)
    counts = _counts_of(session, user, cohort, task_id)
    omop = _omop_datasets(session, user, cohort.project_id)
    return {
        "project": project,
        "cohort": cohort,
        "version": chosen,
        "versions": versions,
        "summary": cohort_views.definition_summary(chosen.definition),
        "definition_json": json.dumps(chosen.definition, indent=2, sort_keys=True),
        "datasets": omop,
        "chosen_datasets": {d.id for d in omop},
        "features": DEFAULT_FEATURES,
        **counts,
        **_run_fields(None, DEFAULT_FEATURES, None),
    }


@router.get("/cohorts/{cohort_id}")
def cohort_page(
    cohort_id: int,
    request: Request,
    visitor: VisitorDep,
    session: SessionDep,
    version: int | None = None,
    task: int | None = None,
) -> Response:
    user = visitor.require()
    context = _cohort_context(session, user, cohort_id, version, task)
    return render(request, "cohort.html", context)


@router.get("/cohorts/{cohort_id}/counts/{task_id}")
def counts_fragment(
    cohort_id: int, task_id: int, request: Request, visitor: VisitorDep, session: SessionDep
) -> Response:
    """The counts section, which re-requests itself while the task runs."""
    user = visitor.require()
    cohort, _ = cohorts.get_cohort(session, user=user, cohort_id=cohort_id)
    context = {"cohort": cohort, **_counts_of(session, user, cohort, task_id)}
    return render(request, "_cohort_counts.html", context)


def _version_of(form: Mapping[str, Sequence[str]], field: str = "version") -> int | None:
    text = (form.get(field) or [""])[-1].strip()
    if not text:
        return None
    if not text.isdigit():
        raise BadRequest(f"{field}: {text!r} is not a version number")
    return int(text)


@router.post("/cohorts/{cohort_id}/counts")
def counts_create(
    cohort_id: int,
    visitor: CheckedVisitor,
    session: SessionDep,
    settings: SettingsDep,
    notifier: NotifierDep,
    form: PostedForm,
) -> Response:
    """A ``cohort_counts`` task on every OMOP dataset the project may use now."""
    user = visitor.require()
    cohort, version = cohorts.get_cohort(
        session, user=user, cohort_id=cohort_id, version=_version_of(form)
    )
    omop = _omop_datasets(session, user, cohort.project_id)
    if not omop:
        raise BadRequest(
            "this project may use no OMOP dataset yet: apply for access to one in the catalogue"
        )
    task = tasks.create_task(
        session,
        actor=user,
        project_id=cohort.project_id,
        algorithm=COUNTS,
        dataset_refs=[d.id for d in omop],
        raw_params={"cohort": {"id": cohort.id, "version": version.version}},
        settings=settings,
    )
    commit(session, notifier)
    return redirect(f"/cohorts/{cohort.id}?version={version.version}&task={task.id}#counts")


# ------------------------------------------------------------------ run an analysis


@router.get("/cohorts/{cohort_id}/run-form")
def run_form_fragment(
    cohort_id: int,
    request: Request,
    visitor: VisitorDep,
    session: SessionDep,
    algorithm: str | None = None,
    features: str = "",
) -> Response:
    """The generated fields for ``algorithm`` with the variables of ``features``."""
    user = visitor.require()
    cohorts.get_cohort(session, user=user, cohort_id=cohort_id)
    query = request.query_params
    skip = ("algorithm", "features", "datasets", "cohort")
    submitted = {k: query.getlist(k) for k in query if k not in skip}
    context = _run_fields(algorithm, features, submitted or None)
    return render(request, "_run_form.html", context)


def _cohort_ref(cohort_id: int, form: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """``cohort`` as the form posts it, ``id/version``, for this page's cohort only."""
    text = (form.get("cohort") or [""])[-1].strip()
    head, _, tail = text.partition("/")
    if head != str(cohort_id) or (tail and not tail.isdigit()):
        raise BadRequest(f"cohort: {text!r} is not a version of cohort {cohort_id} (id/version)")
    return {"id": cohort_id, **({"version": int(tail)} if tail else {})}


def _analysis_params(
    cohort_id: int, algorithm: str, form: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    raw = params_from_form(get_algorithm(algorithm), form)
    raw["cohort"] = _cohort_ref(cohort_id, form)
    text = (form.get("features") or [""])[-1]
    if text.strip():
        try:
            raw["features"] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"features: not valid JSON: {exc.msg} at {exc.pos}") from None
    return raw


@router.post("/cohorts/{cohort_id}/tasks")
def analysis_create(
    cohort_id: int,
    request: Request,
    visitor: CheckedVisitor,
    session: SessionDep,
    settings: SettingsDep,
    notifier: NotifierDep,
    form: PostedForm,
) -> Response:
    user = visitor.require()
    cohort, _ = cohorts.get_cohort(session, user=user, cohort_id=cohort_id)
    algorithm = (form.get("algorithm") or [""])[-1].strip()
    chosen: list[int] = []
    try:
        chosen = [int(v) for v in form.get("datasets", []) if v.strip().isdigit()]
        if not chosen:
            raise BadRequest("datasets: tick at least one dataset to run on")
        task = tasks.create_task(
            session,
            actor=user,
            project_id=cohort.project_id,
            algorithm=algorithm,
            dataset_refs=chosen,
            raw_params=_analysis_params(cohort.id, algorithm, form),
            settings=settings,
        )
    except MedfedError as exc:
        session.rollback()
        tail = (form.get("cohort") or [""])[-1].partition("/")[2]
        version = int(tail) if tail.isdigit() else None
        context = _cohort_context(session, user, cohort_id, version)
        features = (form.get("features") or [""])[-1]
        context.update(
            run_error=exc.message,
            features=features,
            chosen_datasets=set(chosen),
            **_run_fields(algorithm, features, form),
        )
        return render(request, "cohort.html", context, status_code=exc.status_code)
    commit(session, notifier)
    return redirect(f"/tasks/{task.id}")
