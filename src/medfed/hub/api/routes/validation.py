"""Routes of validation studies: ONNX models, studies, and the node's model download.

Researchers: ``POST /api/validation/models`` (register a file already uploaded with
``PUT /api/blobs``; checked without running it), ``GET /api/projects/{id}/validation/
models``, ``POST /api/validation/studies`` (creates the ``validation`` task),
``GET /api/validation/studies/{id}`` (status, each site's run, the result),
``GET /api/projects/{id}/validation/studies``, ``POST /api/validation/studies/{id}/
recalibrated-model`` (a completed study's weak recalibration registered as a new model;
whoever may read the study's results). Nodes: ``GET /api/node/validation/models/
{sha}?run_id=`` streams the model for a run of theirs. Logic lives in
:mod:`medfed.hub.services.validation`.
"""

from __future__ import annotations

from fastapi import APIRouter, status
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from medfed.algorithms.validation.model_check import ModelDescriptor
from medfed.algorithms.validation.resources import (
    OnnxModelCreate,
    OnnxModelPublic,
    StudyCreate,
    StudyPublic,
    StudyRun,
)
from medfed.hub.api.blob_download import blob_response
from medfed.hub.api.deps import CurrentNode, CurrentUser, NotifierDep, SessionDep, SettingsDep
from medfed.hub.db.models_validation import OnnxModel, ValidationStudy
from medfed.hub.dispatch import commit
from medfed.hub.services import tasks
from medfed.hub.services import validation as service
from medfed.hub.services.learning import blobs

router = APIRouter(tags=["validation"])


def model_public(model: OnnxModel) -> OnnxModelPublic:
    d = ModelDescriptor.model_validate(model.descriptor)
    return OnnxModelPublic(
        id=model.id,
        project_id=model.project_id,
        name=model.name,
        sha256=model.sha256,
        size=model.size,
        input=d.input,
        features=d.features,
        output=d.output,
        classes=d.classes,
        image=d.image,
        derived_from=model.derived_from,
        provenance=d.provenance,
        created_at=model.created_at,
    )


def study_public(session: Session, study: ValidationStudy) -> StudyPublic:
    task = service.study_task(session, study)
    runs: list[StudyRun] = []
    if task is not None:
        names = service.dataset_names(session, list(study.dataset_ids))
        for run in tasks.runs_of(session, task.id):
            if run.round != 0:
                continue
            runs.append(
                StudyRun(
                    dataset_id=run.dataset_id,
                    site=names.get(run.dataset_id, str(run.dataset_id)),
                    status=run.status,
                    output_status=run.output_status,
                    error=run.error,
                )
            )
    return StudyPublic(
        id=study.id,
        project_id=study.project_id,
        name=study.name,
        mode="shared" if study.mode == "shared" else "private",
        model_id=study.model_id,
        dataset_ids=list(study.dataset_ids),
        task_id=study.task_id,
        status=task.status if task is not None else "pending",
        error=task.error if task is not None else None,
        definition=dict(study.definition),
        result=task.result if task is not None else None,
        runs=runs,
        created_at=study.created_at,
    )


@router.post("/api/validation/models", status_code=status.HTTP_201_CREATED)
def register_model(
    body: OnnxModelCreate, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> OnnxModelPublic:
    model = service.register_model(
        session,
        user=user,
        settings=settings,
        project_id=body.project_id,
        name=body.name,
        sha256=body.sha256,
        features=body.features,
        output=body.output,
        derived_from=body.derived_from,
        image=body.image,
    )
    public = model_public(model)
    session.commit()
    return public


@router.get("/api/projects/{project_id}/validation/models")
def list_models(project_id: int, user: CurrentUser, session: SessionDep) -> list[OnnxModelPublic]:
    return [model_public(m) for m in service.list_models(session, user=user, project_id=project_id)]


@router.get("/api/validation/models/{model_id}")
def get_model(model_id: int, user: CurrentUser, session: SessionDep) -> OnnxModelPublic:
    return model_public(service.get_model(session, user=user, model_id=model_id))


@router.post("/api/validation/studies", status_code=status.HTTP_201_CREATED)
def create_study(
    body: StudyCreate, user: CurrentUser, session: SessionDep, notifier: NotifierDep
) -> StudyPublic:
    study = service.create_study(
        session,
        user=user,
        project_id=body.project_id,
        name=body.name,
        mode=body.mode,
        model_id=body.model_id,
        datasets=body.datasets,
        definition=body.definition(),
    )
    public = study_public(session, study)
    commit(session, notifier)
    return public


@router.get("/api/validation/studies/{study_id}")
def get_study(study_id: int, user: CurrentUser, session: SessionDep) -> StudyPublic:
    return study_public(session, service.get_study(session, user=user, study_id=study_id))


@router.post(
    "/api/validation/studies/{study_id}/recalibrated-model", status_code=status.HTTP_201_CREATED
)
def recalibrated_model(
    study_id: int, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> OnnxModelPublic:
    model = service.recalibrate_study(session, user=user, settings=settings, study_id=study_id)
    public = model_public(model)
    session.commit()
    return public


@router.get("/api/projects/{project_id}/validation/studies")
def list_studies(project_id: int, user: CurrentUser, session: SessionDep) -> list[StudyPublic]:
    found = service.list_studies(session, user=user, project_id=project_id)
    return [study_public(session, s) for s in found]


@router.get("/api/node/validation/models/{sha256}", response_class=StreamingResponse)
def node_model(
    sha256: str, run_id: int, node: CurrentNode, session: SessionDep, settings: SettingsDep
) -> StreamingResponse:
    service.check_node_model(session, node=node, sha256=sha256, run_id=run_id)
    return blob_response(blobs.store_for(settings), sha256)
