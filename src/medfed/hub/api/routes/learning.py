"""Researcher routes of federated learning: plans, initial weights, trainings, models.

A training is an ordinary task of algorithm ``fl.train`` (``POST /api/trainings`` checks
that its plan and initial weights are at the hub, then creates it like ``POST
/api/tasks``); ``GET /api/trainings/{id}`` reports its phase, per-round metrics and timings.
``PUT /api/blobs`` streams initial weights into the blob store; ``GET
/api/models/{id}/download`` streams a registered model to entitled project members.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from medfed.common.errors import NotFound
from medfed.common.learning_resources import (
    BlobStored,
    ModelPublic,
    PlanCreate,
    PlanPublic,
    PlanSource,
    PrivacyBudgetPublic,
    PrivacyBudgetSet,
    TrainingCreate,
    TrainingProgress,
)
from medfed.common.resources import TaskPublic
from medfed.hub.api.blob_download import blob_response
from medfed.hub.api.deps import CurrentUser, NotifierDep, SessionDep, SettingsDep
from medfed.hub.api.limits import stream_to_store
from medfed.hub.api.routes.tasks import task_public
from medfed.hub.db.models import User
from medfed.hub.dispatch import commit
from medfed.hub.services import tasks
from medfed.hub.services.learning import blobs, budget, plans, progress, registry

router = APIRouter(prefix="/api", tags=["learning"])


@router.post("/plans", status_code=status.HTTP_201_CREATED)
def submit_plan(
    body: PlanCreate, user: CurrentUser, session: SessionDep, notifier: NotifierDep
) -> PlanPublic:
    plan = plans.submit_plan(session, actor=user, name=body.name, source=body.source)
    commit(session, notifier)
    return PlanPublic.model_validate(plan)


@router.get("/plans")
def list_plans(user: CurrentUser, session: SessionDep) -> list[PlanPublic]:
    return [PlanPublic.model_validate(p) for p in plans.list_plans(session)]


@router.get("/plans/{plan_hash}")
def get_plan(plan_hash: str, user: CurrentUser, session: SessionDep) -> PlanSource:
    return PlanSource.model_validate(plans.get_plan(session, plan_hash_=plan_hash))


def _register(request: Request, sha: str, size: int, user_id: int) -> None:
    with request.app.state.sessionmaker() as session:
        blobs.register(session, sha256=sha, size=size, kind="initial", user_id=user_id)
        session.commit()


def _allowance(request: Request, user: User) -> int:
    with request.app.state.read_sessionmaker() as session:
        return blobs.upload_allowance(session, user=user, settings=request.app.state.settings)


@router.put("/blobs")
async def put_blob(
    request: Request, user: CurrentUser, x_content_sha256: str = Header()
) -> BlobStored:
    """Initial weights (safetensors) for a training; streamed to disk, hash checked.

    Researchers only, each within ``blob_quota_bytes`` in all (413 beyond it).
    """
    allowed = await run_in_threadpool(_allowance, request, user)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > allowed:
        raise blobs.QuotaExceeded(f"the blob is larger than the {allowed} bytes you may upload")
    sha, size = await stream_to_store(request, allowed, x_content_sha256)
    await run_in_threadpool(_register, request, sha, size, user.id)
    return BlobStored(sha256=sha, size=size)


@router.post("/trainings", status_code=status.HTTP_201_CREATED)
def create_training(
    body: TrainingCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    notifier: NotifierDep,
) -> TaskPublic:
    plans.require_training_inputs(session, settings=settings, params=body.params)
    task = tasks.create_task(
        session,
        actor=user,
        project_id=body.project_id,
        algorithm="fl.train",
        dataset_refs=body.datasets,
        raw_params=body.params,
    )
    commit(session, notifier)
    return task_public(session, task)


@router.get("/trainings/{task_id}")
def get_training(task_id: int, user: CurrentUser, session: SessionDep) -> TrainingProgress:
    return progress.training_progress(session, user=user, task_id=task_id)


@router.get("/models")
def list_models(project_id: int, user: CurrentUser, session: SessionDep) -> list[ModelPublic]:
    return [
        ModelPublic.model_validate(m)
        for m in registry.list_models(session, user=user, project_id=project_id)
    ]


@router.get("/models/{model_id}")
def get_model(model_id: int, user: CurrentUser, session: SessionDep) -> ModelPublic:
    return ModelPublic.model_validate(registry.get_model(session, user=user, model_id=model_id))


@router.get("/models/{model_id}/download", response_class=StreamingResponse)
def download_model(
    model_id: int,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    notifier: NotifierDep,
) -> StreamingResponse:
    model = registry.model_for_download(session, user=user, model_id=model_id)
    filename = f"{model.name}-v{model.version}.safetensors"
    response = blob_response(blobs.store_for(settings), model.blob_sha256, filename=filename)
    commit(session, notifier)
    return response


@router.put("/projects/{project_id}/privacy-budget")
def set_privacy_budget(
    project_id: int,
    body: PrivacyBudgetSet,
    user: CurrentUser,
    session: SessionDep,
    notifier: NotifierDep,
) -> PrivacyBudgetPublic:
    public = budget.set_budget(
        session, actor=user, project_id=project_id, epsilon=body.epsilon, delta=body.delta
    )
    commit(session, notifier)
    return public


@router.get("/projects/{project_id}/privacy-budget")
def get_privacy_budget(project_id: int, user: CurrentUser, session: SessionDep) -> dict[str, Any]:
    found = budget.get_budget(session, user=user, project_id=project_id)
    if found is None:
        raise NotFound(f"project {project_id} has no privacy budget")
    return found.model_dump()
