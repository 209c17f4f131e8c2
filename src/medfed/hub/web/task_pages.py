"""Pages for running an analysis and reading its result; the project's model registry.

* ``POST /projects/{id}/tasks`` — the run-an-analysis form: its fields become raw
  parameters (:func:`medfed.hub.web.param_form.params_from_form`, or the JSON text area
  when filled) and go to ``tasks.create_task`` exactly as ``POST /api/tasks`` sends them
  (``fl.train`` first checks its plan and initial weights, as ``POST /api/trainings``).
  A refusal shows the project page again with the message and the values entered.
* ``GET /projects/{id}/run-form`` — the form's fields for another algorithm or other
  datasets (htmx swaps them in when the algorithm or a dataset box changes).
* ``GET /tasks/{id}`` — parameters, datasets by name, the result's plot and its tables,
  the text summary, one row per node with its rounds folded; while the task runs, the
  status fragment (``/tasks/{id}/status``) re-requests itself every second.
* ``GET /tasks/{id}/plot.png`` — the result's own ``plot`` (KM curves with their bands,
  forest plots, histograms, quantiles, correlation maps); for a training, the metrics per
  round, drawn from the progress while it still runs.
* ``GET /projects/{id}/models`` and ``/models/{id}/download`` — the model registry.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from medfed.algorithms.base import Presentable
from medfed.algorithms.learning.charts import plot_history
from medfed.algorithms.registry import get_algorithm
from medfed.common.errors import BadRequest, MedfedError, NotFound
from medfed.common.resources import TaskPublic, TaskStatus
from medfed.hub.api.blob_download import blob_response
from medfed.hub.api.deps import NotifierDep, SessionDep, SettingsDep
from medfed.hub.api.routes.tasks import every_run, task_public
from medfed.hub.db.models import User
from medfed.hub.dispatch import commit
from medfed.hub.services import projects, tasks
from medfed.hub.services.learning import blobs, plans, progress, registry
from medfed.hub.web import catalogue_views, project_pages, task_views
from medfed.hub.web.param_form import params_from_form
from medfed.hub.web.result_tables import result_tables
from medfed.hub.web.session import CheckedVisitor, PageRoute, VisitorDep, redirect, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)

TRAINING = "fl.train"


async def posted_form(request: Request) -> dict[str, list[str]]:
    """The posted form as lists of strings (a field may repeat: multi-selects, boxes)."""
    form = await request.form()
    return {key: [v for v in form.getlist(key) if isinstance(v, str)] for key in form}


PostedForm = Annotated[dict[str, list[str]], Depends(posted_form)]


def _dataset_ids(form: dict[str, list[str]]) -> list[int]:
    try:
        ids = [int(v) for v in form.get("datasets", []) if v.strip()]
    except ValueError:
        raise BadRequest("datasets: a dataset id is not a number") from None
    if not ids:
        raise BadRequest("datasets: tick at least one dataset to run on")
    return ids


def _raw_params(algorithm: str, form: dict[str, list[str]]) -> dict[str, Any]:
    """The JSON text area when filled (it replaces the fields), else the fields."""
    text = (form.get("params_json") or [""])[-1]
    if text.strip():
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"parameters are not valid JSON: {exc.msg} at {exc.pos}") from None
        if not isinstance(loaded, dict):
            raise BadRequest('parameters must be a JSON object, e.g. {"columns": ["age"]}')
        return loaded
    return params_from_form(get_algorithm(algorithm), form)


@router.post("/projects/{project_id}/tasks")
def task_create(
    project_id: int,
    request: Request,
    visitor: CheckedVisitor,
    session: SessionDep,
    settings: SettingsDep,
    notifier: NotifierDep,
    form: PostedForm,
) -> Response:
    user = visitor.require()
    algorithm = (form.get("algorithm") or [""])[-1].strip()
    chosen: list[int] | None = None
    try:
        chosen = _dataset_ids(form)
        raw = _raw_params(algorithm, form)
        if algorithm == TRAINING:
            plans.require_training_inputs(session, settings=settings, params=raw)
        task = tasks.create_task(
            session,
            actor=user,
            project_id=project_id,
            algorithm=algorithm,
            dataset_refs=list(chosen),
            raw_params=raw,
            settings=settings,
        )
    except MedfedError as exc:
        session.rollback()
        context = project_pages.project_context(
            session,
            user=user,
            project_id=project_id,
            algorithm=algorithm,
            chosen=chosen or [],
            submitted=form,
        )
        context["run_error"] = exc.message
        context["params_json"] = (form.get("params_json") or [""])[-1]
        return render(request, "project.html", context, status_code=exc.status_code)
    commit(session, notifier)
    return redirect(f"/tasks/{task.id}")


@router.get("/projects/{project_id}/run-form")
def run_form_fragment(
    project_id: int,
    request: Request,
    visitor: VisitorDep,
    session: SessionDep,
    algorithm: str | None = None,
) -> Response:
    """The generated fields of ``algorithm`` for the datasets ticked (``?datasets=…``)."""
    user = visitor.require()
    projects.get_project(session, project_id=project_id, user=user)
    usable = catalogue_views.usable_datasets(session, user=user, project_id=project_id)
    query = request.query_params
    chosen = [int(v) for v in query.getlist("datasets") if v.isdigit()]
    # the fields' values when only the datasets changed (htmx includes the fields then)
    submitted = {k: query.getlist(k) for k in query if k not in ("algorithm", "datasets")}
    context = task_views.run_form_context(usable, algorithm, chosen, submitted or None)
    return render(request, "_run_form.html", context)


def _has_plot(public: TaskPublic) -> bool:
    """A finished result whose model draws itself."""
    if public.status != TaskStatus.completed or public.result is None:
        return False
    return callable(getattr(get_algorithm(public.algorithm).Result, "plot", None))


def _history(session: Session, user: User, public: TaskPublic) -> list[dict[str, Any]]:
    """A training's rounds so far (its metrics per round); none for other tasks."""
    if public.algorithm != TRAINING:
        return []
    return progress.training_progress(session, user=user, task_id=public.id).history


def _task_context(session: Session, user: User, public: TaskPublic) -> dict[str, Any]:
    summary, tables = None, []
    if public.status == TaskStatus.completed and public.result is not None:
        result = get_algorithm(public.algorithm).Result.model_validate(public.result)
        summarize = getattr(result, "summary", None)
        summary = str(summarize()) if callable(summarize) else None
        tables = result_tables(result)
    labels = task_views.dataset_labels(session, public.dataset_ids)
    runs = public.runs
    if user.is_superuser:
        runs = every_run(session, tasks.get_task(session, task_id=public.id, user=user))
    model = None
    if public.algorithm == TRAINING and public.status == TaskStatus.completed:
        models = registry.list_models(session, user=user, project_id=public.project_id)
        model = next((m for m in models if m.task_id == public.id), None)
    history = _history(session, user, public)
    return {
        "task": public,
        "running": public.status == TaskStatus.running,
        "summary": summary,
        "tables": tables,
        "dataset_labels": labels,
        "params": task_views.param_rows(public.params),
        # researchers see each node's first round (later rounds list only the contributors:
        # that would name the node that withheld); the hub administrator sees every run
        "node_rows": task_views.node_rows(runs, labels),
        "later_rounds_hidden": not user.is_superuser
        and public.round > min((r.round for r in public.runs), default=public.round),
        # a finished result's plot, or the chart of a training's rounds so far
        "plot": _has_plot(public) or bool(history),
        "plot_version": f"{public.status.value}-{public.round}-{len(history)}",
        "model": model,
        "result_json": json.dumps(public.result, indent=2) if public.result is not None else "",
    }


def _public(session: Session, user: User, task_id: int) -> TaskPublic:
    return task_public(session, tasks.get_task(session, task_id=task_id, user=user))


@router.get("/tasks/{task_id}")
def task_page(task_id: int, request: Request, visitor: VisitorDep, session: SessionDep) -> Response:
    user = visitor.require()
    context = _task_context(session, user, _public(session, user, task_id))
    return render(request, "task.html", context)


@router.get("/tasks/{task_id}/status")
def task_status(
    task_id: int, request: Request, visitor: VisitorDep, session: SessionDep
) -> Response:
    """The status fragment that the task page's htmx poll swaps in."""
    user = visitor.require()
    context = _task_context(session, user, _public(session, user, task_id))
    return render(request, "_task_status.html", context)


@router.get("/tasks/{task_id}/plot.png")
def task_plot(task_id: int, visitor: VisitorDep, session: SessionDep) -> Response:
    """The result's plot as PNG, drawn by the result's own ``plot`` (as the CLI's)."""
    user = visitor.require()
    public = _public(session, user, task_id)
    png = None
    if _has_plot(public):
        result = get_algorithm(public.algorithm).Result.model_validate(public.result)
        png = task_views.plot_png(cast(Presentable, result).plot)
    else:
        history = _history(session, user, public)
        if history:
            png = task_views.plot_png(lambda path: plot_history(history, path, TRAINING))
    if png is None:
        raise NotFound(f"task {task_id} has no plot (yet)")
    final = public.status != TaskStatus.running
    cache = "private, max-age=86400" if final else "private, no-cache"
    return Response(png, media_type="image/png", headers={"Cache-Control": cache})


@router.get("/projects/{project_id}/models")
def model_registry(
    project_id: int, request: Request, visitor: VisitorDep, session: SessionDep
) -> Response:
    user = visitor.require()
    project = projects.get_project(session, project_id=project_id, user=user)
    models = list(reversed(registry.list_models(session, user=user, project_id=project_id)))
    ids = sorted({i for m in models for i in m.dataset_ids})
    context = {
        "project": project,
        "models": models,
        "dataset_labels": task_views.dataset_labels(session, ids),
    }
    return render(request, "models.html", context)


@router.get("/models/{model_id}/download")
def model_download(
    model_id: int,
    visitor: VisitorDep,
    session: SessionDep,
    settings: SettingsDep,
    notifier: NotifierDep,
) -> Response:
    """The weights, for members entitled to every dataset (as the API's download)."""
    user = visitor.require()
    model = registry.model_for_download(session, user=user, model_id=model_id)
    filename = f"{model.name}-v{model.version}.safetensors"
    response = blob_response(blobs.store_for(settings), model.blob_sha256, filename=filename)
    commit(session, notifier)
    return response
