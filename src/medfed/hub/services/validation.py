"""Validation studies on the hub: ONNX models into the registry, studies, their results.

How it runs:

* :func:`register_model` — the researcher first streams the file to the blob store
  (``PUT /api/blobs``, hash checked, within the blob quota), then registers it: the hub
  reads it back (over ``max_model_bytes``: refused before parsing), checks it without
  running anything (:func:`medfed.algorithms.validation.model_check.check_model`) and
  adds a row to ``fl_onnx_models`` with the checked descriptor; ``validation.model`` goes
  to the ledger. A refusal changes nothing.
* :func:`create_study` — checks the model, datasets and definition by building the
  ``validation`` task's parameters and creating the task (entitlements, lifecycle, the
  algorithm's own checks against the datasets' columns: the model's features must be
  numeric columns of every dataset). A *private* study's datasets must all be hosted by
  nodes of the creator's organization. A model ``derived_from`` a training in the
  registry makes every node leave out that training's rows.
* :func:`get_study` — project members see a study; a private study only members of its
  organization (others get 404, as if it did not exist).
* :func:`recalibrate_study` — a finished study's weak recalibration as a new model:
  whoever sees the study's pooled results (and may upload) gets the source model with
  ``expit(a + b·logit p)`` appended to its graph
  (:func:`medfed.algorithms.validation.recalibrate.recalibrated_onnx`; graph surgery,
  nothing runs), written to the blob store under their quota and registered by
  :func:`register_model` (the same check as an upload) with the source's declared inputs,
  its ``derived_from`` (training rows stay excluded) and a ``provenance`` naming the
  source model and the study. Deriving again returns the model already registered. A
  model derived from a *private* study is seen by its organization only (as the study).
* :func:`check_node_model` — a node fetches a model only for a run of its own whose task
  is a validation of exactly that model.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.algorithms.validation.images import ImageSpec
from medfed.algorithms.validation.model_check import ModelDescriptor, OutputSpec, check_model
from medfed.algorithms.validation.recalibrate import EPS, recalibrated_onnx
from medfed.common.errors import BadRequest, Forbidden, NotFound
from medfed.common.resources import TaskStatus
from medfed.hub.config import HubSettings
from medfed.hub.db.models import Dataset, Node, Run, Task, User
from medfed.hub.db.models_fl import Blob, ModelVersion
from medfed.hub.db.models_validation import OnnxModel, ValidationStudy
from medfed.hub.services import tasks
from medfed.hub.services.learning import blobs
from medfed.hub.services.ledger import actor_of, record
from medfed.hub.services.projects import get_project

__all__ = [
    "check_node_model",
    "create_study",
    "get_model",
    "get_study",
    "list_models",
    "list_studies",
    "recalibrate_study",
    "register_model",
]


def register_model(
    session: Session,
    *,
    user: User,
    settings: HubSettings,
    project_id: int,
    name: str,
    sha256: str,
    features: list[str],
    output: OutputSpec,
    derived_from: int | None = None,
    image: ImageSpec | None = None,
    provenance: dict[str, Any] | None = None,
) -> OnnxModel:
    get_project(session, project_id=project_id, user=user)
    store = blobs.store_for(settings)
    blob = session.get(Blob, sha256)
    if blob is None or not store.exists(sha256):
        raise NotFound(f"blob {sha256} not found: upload the file with PUT /api/blobs first")
    if blob.user_id != user.id and not user.is_superuser:
        raise Forbidden("register a model from a file you uploaded yourself")
    if blob.size > settings.max_model_bytes:
        raise BadRequest(
            f"the model is {blob.size} bytes, larger than this hub's limit of "
            f"{settings.max_model_bytes} bytes"
        )
    descriptor = check_model(
        store.read(sha256),
        features=features,
        output=output,
        max_bytes=settings.max_model_bytes,
        image=image,
    ).model_copy(update={"provenance": provenance})
    if derived_from is not None and image is not None:
        raise BadRequest(
            "--derived-from names a medfed training, and those train on tables: an image "
            "model cannot be derived from one"
        )
    if derived_from is not None:
        source = session.get(ModelVersion, derived_from)
        if source is None or source.project_id != project_id:
            raise NotFound(f"registry model {derived_from} not found in project {project_id}")
    existing = session.scalar(
        select(OnnxModel).where(OnnxModel.project_id == project_id, OnnxModel.sha256 == sha256)
    )
    if existing is not None:
        raise BadRequest(f"this model is already registered in the project (model {existing.id})")
    model = OnnxModel(
        project_id=project_id,
        organization_id=user.organization_id,
        name=name,
        sha256=sha256,
        size=descriptor.size,
        descriptor=descriptor.model_dump(mode="json"),
        derived_from=derived_from,
        uploaded_by=user.id,
    )
    session.add(model)
    session.flush()
    record(
        session,
        action="validation.model",
        actor=actor_of(user),
        objects={
            "model": model.id,
            "project": project_id,
            **({"derived_from": derived_from} if derived_from is not None else {}),
            **({"study": provenance["study"]} if provenance and "study" in provenance else {}),
        },
        hashes={"onnx": sha256},
    )
    return model


def _model_visible(model: OnnxModel, user: User) -> bool:
    """A model derived from a private study is its organization's, like the study."""
    provenance = (model.descriptor or {}).get("provenance") or {}
    return (
        provenance.get("mode") != "private"
        or user.organization_id == model.organization_id
        or user.is_superuser
    )


def list_models(session: Session, *, user: User, project_id: int) -> list[OnnxModel]:
    get_project(session, project_id=project_id, user=user)
    found = session.scalars(
        select(OnnxModel).where(OnnxModel.project_id == project_id).order_by(OnnxModel.id)
    )
    return [m for m in found if _model_visible(m, user)]


def get_model(session: Session, *, user: User, model_id: int) -> OnnxModel:
    model = session.get(OnnxModel, model_id)
    if model is None or not _model_visible(model, user):
        raise NotFound(f"validation model {model_id} not found")
    get_project(session, project_id=model.project_id, user=user)
    return model


def _exclusion(session: Session, model: OnnxModel) -> dict[str, Any] | None:
    if model.derived_from is None:
        return None
    source = session.get(ModelVersion, model.derived_from)
    training = session.get(Task, source.task_id) if source is not None else None
    if source is None or training is None:
        return None
    params = training.params or {}
    return {
        "dataset_ids": list(source.dataset_ids),
        "columns": list(params.get("columns") or []),
        "holdout": params.get("holdout") or {},
    }


def _check_private(session: Session, user: User, dataset_refs: list[int | str]) -> None:
    from medfed.hub.services import datasets as dataset_service

    for dataset in dataset_service.resolve(session, dataset_refs):
        node = session.get(Node, dataset.node_id)
        if node is None or node.organization_id != user.organization_id:
            raise Forbidden(
                f"a private study validates on its own organization's patients; dataset "
                f"'{dataset.name}' is hosted by another organization (use mode 'shared')"
            )


def create_study(
    session: Session,
    *,
    user: User,
    project_id: int,
    name: str,
    mode: str,
    model_id: int,
    datasets: list[int | str],
    definition: dict[str, Any],
) -> ValidationStudy:
    """Store the study and create its ``validation`` task (everything checked first)."""
    model = get_model(session, user=user, model_id=model_id)
    if model.project_id != project_id:
        raise BadRequest(f"validation model {model_id} belongs to another project")
    if mode not in ("private", "shared"):
        raise BadRequest(f"mode must be 'private' or 'shared', not {mode!r}")
    if mode == "private":
        _check_private(session, user, datasets)
    allowed = {"outcome", "where", "thresholds", "calibration_bins", "grid", "subgroups", "labels"}
    unknown = sorted(set(definition) - allowed)
    if unknown:
        raise BadRequest(f"unknown study fields {unknown} (known: {sorted(allowed)})")
    descriptor = ModelDescriptor.model_validate(model.descriptor)
    study = ValidationStudy(
        project_id=project_id,
        organization_id=user.organization_id,
        name=name,
        mode=mode,
        model_id=model.id,
        definition=dict(definition),
        dataset_ids=[],
        created_by=user.id,
    )
    session.add(study)
    session.flush()
    params = {
        **definition,
        "study_id": study.id,
        "mode": mode,
        "model": {
            "sha256": descriptor.sha256,
            "features": descriptor.features,
            "input": descriptor.input,
            "input_type": descriptor.input_type,
            "output": descriptor.output.model_dump(),
            "classes": descriptor.classes,
            **({"image": descriptor.image.model_dump()} if descriptor.image else {}),
        },
        "exclude_training": _exclusion(session, model),
    }
    task = tasks.create_task(
        session,
        actor=user,
        project_id=project_id,
        algorithm="validation",
        dataset_refs=datasets,
        raw_params=params,
    )
    study.task_id = task.id
    study.dataset_ids = list(task.dataset_ids)
    record(
        session,
        action="validation.study",
        actor=actor_of(user),
        objects={"study": study.id, "task": task.id, "model": model.id, "mode": mode},
    )
    session.flush()
    return study


def _visible(study: ValidationStudy, user: User) -> bool:
    return study.mode != "private" or user.organization_id == study.organization_id


def get_study(session: Session, *, user: User, study_id: int) -> ValidationStudy:
    study = session.get(ValidationStudy, study_id)
    if study is None:
        raise NotFound(f"validation study {study_id} not found")
    try:
        get_project(session, project_id=study.project_id, user=user)
    except Forbidden:
        raise NotFound(f"validation study {study_id} not found") from None
    if not _visible(study, user) and not user.is_superuser:
        raise NotFound(f"validation study {study_id} not found")
    return study


def list_studies(session: Session, *, user: User, project_id: int) -> list[ValidationStudy]:
    get_project(session, project_id=project_id, user=user)
    found = session.scalars(
        select(ValidationStudy)
        .where(ValidationStudy.project_id == project_id)
        .order_by(ValidationStudy.id)
    )
    return [s for s in found if _visible(s, user) or user.is_superuser]


def study_task(session: Session, study: ValidationStudy) -> Task | None:
    return None if study.task_id is None else session.get(Task, study.task_id)


def recalibrate_study(
    session: Session, *, user: User, settings: HubSettings, study_id: int
) -> OnnxModel:
    """The study model recalibrated by the study's pooled fit, registered (see the module)."""
    study = get_study(session, user=user, study_id=study_id)
    task = study_task(session, study)
    if task is None or task.status != TaskStatus.completed.value:
        state = "pending" if task is None else task.status
        raise BadRequest(
            f"validation study {study_id} is {state}: a recalibrated model is derived from "
            "a completed study"
        )
    fit = (task.result or {}).get("recalibration") or {}
    intercept, slope = fit.get("intercept"), fit.get("slope")
    if not isinstance(intercept, int | float) or not isinstance(slope, int | float):
        raise BadRequest(f"validation study {study_id} has no recalibration to derive a model from")
    source = session.get(OnnxModel, study.model_id)
    assert source is not None
    descriptor = ModelDescriptor.model_validate(source.descriptor)
    store = blobs.store_for(settings)
    data, output = recalibrated_onnx(
        store.read(source.sha256),
        output=descriptor.output,
        intercept=float(intercept),
        slope=float(slope),
        eps=float(fit.get("clip", EPS)),
    )
    digest = hashlib.sha256(data).hexdigest()
    existing = session.scalar(
        select(OnnxModel).where(
            OnnxModel.project_id == study.project_id, OnnxModel.sha256 == digest
        )
    )
    if existing is not None:
        return existing
    check_model(  # refused here, before anything is stored
        data,
        features=descriptor.features,
        output=output,
        max_bytes=settings.max_model_bytes,
        image=descriptor.image,
    )
    if len(data) > blobs.upload_allowance(session, user=user, settings=settings):
        raise blobs.QuotaExceeded(
            f"the recalibrated model ({len(data)} bytes) does not fit in your blob quota"
        )
    store.write_bytes(data)
    blobs.register(session, sha256=digest, size=len(data), kind="initial", user_id=user.id)
    return register_model(
        session,
        user=user,
        settings=settings,
        project_id=study.project_id,
        name=f"{source.name} recalibrated (study {study.id})"[:200],
        sha256=digest,
        features=descriptor.features,
        output=output,
        derived_from=source.derived_from,
        image=descriptor.image,
        provenance={
            "kind": "recalibration",
            "model": source.id,
            "study": study.id,
            "mode": study.mode,
            "intercept": float(intercept),
            "slope": float(slope),
            "clip": float(fit.get("clip", EPS)),
        },
    )


def check_node_model(session: Session, *, node: Node, sha256: str, run_id: int) -> None:
    """A node fetches a model only for its own run of a validation of that model (else 404)."""
    run = session.get(Run, run_id)
    task = session.get(Task, run.task_id) if run is not None else None
    if (
        run is None
        or task is None
        or run.node_id != node.id
        or task.algorithm != "validation"
        or (task.params or {}).get("model", {}).get("sha256") != sha256
    ):
        raise NotFound(f"model {sha256[:12]}… not found for run {run_id}")


def dataset_names(session: Session, ids: list[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for i in ids:
        dataset = session.get(Dataset, i)
        node = session.get(Node, dataset.node_id) if dataset is not None else None
        if dataset is not None:
            out[i] = f"{node.name if node else '?'}/{dataset.name}"
    return out
