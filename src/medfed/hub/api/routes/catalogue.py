"""Routes for projects, members, nodes (user side), datasets and the catalogue.

Dataset routes show only the versions the caller may see (``catalogue.lifecycle``); the
catalogue search, a dataset's catalogue record and its DCAT / DataCite exports also
answer anonymous callers (published datasets only). A token that is sent must be valid.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import JSONResponse

from medfed.common.catalogue_resources import (
    CatalogueResults,
    DatasetMetadataUpdate,
    DatasetRecord,
    TransitionRequest,
    ZenodoDepositionPublic,
    ZenodoSettingsPublic,
    ZenodoSettingsUpdate,
)
from medfed.common.errors import Forbidden
from medfed.common.resources import (
    DatasetPublic,
    MemberAdd,
    NodeCreate,
    NodeCreated,
    NodePublic,
    ProjectCreate,
    ProjectPublic,
)
from medfed.hub.api.deps import Credentials, CurrentUser, SessionDep
from medfed.hub.db.models import Node, Project, User
from medfed.hub.services import auth, nodes, projects
from medfed.hub.services.catalogue import lifecycle, metadata, search, zenodo

router = APIRouter(prefix="/api")


def project_public(session: SessionDep, project: Project) -> ProjectPublic:
    public = ProjectPublic.model_validate(project)
    public.members = projects.member_ids(session, project.id)
    return public


def node_public(node: Node) -> NodePublic:
    public = NodePublic.model_validate(node)
    public.online = nodes.is_online(node)
    return public


def get_optional_user(session: SessionDep, credentials: Credentials) -> User | None:
    """The caller, or None for an anonymous one; a token that is sent must be valid."""
    if credentials is None:
        return None
    principal = auth.authenticate(session, bearer=credentials.credentials)
    session.commit()  # end the read transaction, as get_principal does
    if not isinstance(principal, User):
        raise Forbidden("node credentials cannot call user routes")
    return principal


OptionalUser = Annotated[User | None, Depends(get_optional_user)]


@router.get("/projects", tags=["projects"])
def list_projects(user: CurrentUser, session: SessionDep) -> list[ProjectPublic]:
    return [project_public(session, p) for p in projects.list_projects(session, actor=user)]


@router.post("/projects", tags=["projects"], status_code=status.HTTP_201_CREATED)
def create_project(body: ProjectCreate, user: CurrentUser, session: SessionDep) -> ProjectPublic:
    project = projects.create_project(
        session,
        actor=user,
        name=body.name,
        description=body.description,
        organization_id=body.organization_id,
    )
    session.commit()
    return project_public(session, project)


@router.get("/projects/{project_id}", tags=["projects"])
def get_project(project_id: int, user: CurrentUser, session: SessionDep) -> ProjectPublic:
    return project_public(session, projects.get_project(session, project_id=project_id, user=user))


@router.post("/projects/{project_id}/members", tags=["projects"])
def add_member(
    project_id: int, body: MemberAdd, user: CurrentUser, session: SessionDep
) -> ProjectPublic:
    project = projects.add_member(session, actor=user, project_id=project_id, user_id=body.user_id)
    session.commit()
    return project_public(session, project)


@router.get("/nodes", tags=["nodes"])
def list_nodes(_: CurrentUser, session: SessionDep) -> list[NodePublic]:
    return [node_public(n) for n in nodes.list_nodes(session)]


@router.post("/nodes", tags=["nodes"], status_code=status.HTTP_201_CREATED)
def create_node(body: NodeCreate, user: CurrentUser, session: SessionDep) -> NodeCreated:
    node, secret = nodes.create_node(
        session, actor=user, name=body.name, organization_id=body.organization_id
    )
    session.commit()
    return NodeCreated.model_validate({**node_public(node).model_dump(), "secret": secret})


@router.get("/datasets", tags=["datasets"])
def list_datasets(
    user: CurrentUser, session: SessionDep, node_id: int | None = None
) -> list[DatasetPublic]:
    """Every dataset version you may see (drafts only for their authors)."""
    return [
        metadata.public_of(d) for d in search.visible_datasets(session, user=user, node_id=node_id)
    ]


@router.get("/datasets/{dataset_id}", tags=["datasets"])
def get_dataset(dataset_id: int, user: CurrentUser, session: SessionDep) -> DatasetPublic:
    return metadata.public_of(lifecycle.visible_dataset(session, dataset_id, user))


@router.patch("/datasets/{dataset_id}/metadata", tags=["catalogue"])
def update_metadata(
    dataset_id: int, body: DatasetMetadataUpdate, user: CurrentUser, session: SessionDep
) -> DatasetRecord:
    """Edit a draft's DCAT metadata (its organization's stewards and admins)."""
    dataset = metadata.update_metadata(session, actor=user, dataset_id=dataset_id, body=body)
    session.commit()
    return metadata.record_of(session, dataset)


def _move(
    session: SessionDep, user: User, dataset_id: int, move: lifecycle.Transition, reason: str
) -> DatasetRecord:
    dataset = lifecycle.transition(
        session, actor=user, dataset_id=dataset_id, move=move, reason=reason
    )
    session.commit()
    return metadata.record_of(session, dataset)


@router.post("/datasets/{dataset_id}/release", tags=["catalogue"])
def release(
    dataset_id: int, user: CurrentUser, session: SessionDep, body: TransitionRequest | None = None
) -> DatasetRecord:
    """draft → released: metadata frozen, usable by entitled projects."""
    reason = body.reason if body else ""
    return _move(session, user, dataset_id, lifecycle.Transition.release, reason)


@router.post("/datasets/{dataset_id}/publish", tags=["catalogue"])
def publish(
    dataset_id: int, user: CurrentUser, session: SessionDep, body: TransitionRequest | None = None
) -> DatasetRecord:
    """released → published: metadata public (deposited at Zenodo if configured)."""
    reason = body.reason if body else ""
    return _move(session, user, dataset_id, lifecycle.Transition.publish, reason)


@router.post("/datasets/{dataset_id}/invalidate", tags=["catalogue"])
def invalidate(
    dataset_id: int, user: CurrentUser, session: SessionDep, body: TransitionRequest | None = None
) -> DatasetRecord:
    """released/published → invalidated (needs a reason): never usable, tombstone kept."""
    reason = body.reason if body else ""
    return _move(session, user, dataset_id, lifecycle.Transition.invalidate, reason)


@router.post("/datasets/{dataset_id}/reactivate", tags=["catalogue"])
def reactivate(
    dataset_id: int, user: CurrentUser, session: SessionDep, body: TransitionRequest | None = None
) -> DatasetRecord:
    """invalidated → released (or published, if it had been published)."""
    reason = body.reason if body else ""
    return _move(session, user, dataset_id, lifecycle.Transition.reactivate, reason)


@router.get("/datasets/{dataset_id}/versions", tags=["catalogue"])
def versions(dataset_id: int, user: CurrentUser, session: SessionDep) -> list[DatasetRecord]:
    """Every version of this dataset you may see, oldest first."""
    dataset = lifecycle.visible_dataset(session, dataset_id, user)
    return [
        metadata.record_of(session, d)
        for d in search.visible_datasets(session, user=user, node_id=dataset.node_id)
        if d.name == dataset.name
    ]


@router.get("/datasets/{dataset_id}/zenodo", tags=["catalogue"])
def depositions(
    dataset_id: int, user: CurrentUser, session: SessionDep
) -> list[ZenodoDepositionPublic]:
    """The dataset version's Zenodo depositions, failed ones included (its authors)."""
    dataset = lifecycle.visible_dataset(session, dataset_id, user)
    lifecycle.require_author(session, user, dataset, "reading the depositions of")
    return [
        ZenodoDepositionPublic.model_validate(d, from_attributes=True)
        for d in zenodo.depositions_of(session, dataset.id)
    ]


@router.get("/organizations/{organization_id}/zenodo", tags=["catalogue"])
def get_zenodo(
    organization_id: int, user: CurrentUser, session: SessionDep
) -> ZenodoSettingsPublic:
    return zenodo.get_settings(session, actor=user, organization_id=organization_id)


@router.put("/organizations/{organization_id}/zenodo", tags=["catalogue"])
def put_zenodo(
    organization_id: int, body: ZenodoSettingsUpdate, user: CurrentUser, session: SessionDep
) -> ZenodoSettingsPublic:
    """Set the organization's Zenodo endpoint and token (its admins); the token never comes back."""
    out = zenodo.set_settings(session, actor=user, organization_id=organization_id, body=body)
    session.commit()
    return out


# ------------------------------------------------------- public (anonymous allowed)


@router.get("/catalogue", tags=["catalogue"])
def catalogue_search(
    user: OptionalUser,
    session: SessionDep,
    q: str = Query(default="", max_length=500),
    theme: list[str] = Query(default=[]),
    keyword: list[str] = Query(default=[]),
    modality: list[str] = Query(default=[]),
    access_rights: list[str] = Query(default=[]),
    duo: list[str] = Query(default=[]),
    state: list[str] = Query(default=[]),
    node: list[str] = Query(default=[]),
    limit: int = Query(default=50, ge=1, le=search.MAX_LIMIT),
    offset: int = Query(default=0, ge=0),
) -> CatalogueResults:
    """Faceted search; anonymous callers see published datasets only."""
    filters = {
        "theme": theme,
        "keyword": keyword,
        "modality": modality,
        "access_rights": access_rights,
        "duo": duo,
        "state": state,
        "node": node,
    }
    return search.search(session, user=user, q=q, filters=filters, limit=limit, offset=offset)


@router.get("/catalogue/{dataset_id}", tags=["catalogue"])
def catalogue_record(dataset_id: int, user: OptionalUser, session: SessionDep) -> DatasetRecord:
    return metadata.record_of(session, lifecycle.visible_dataset(session, dataset_id, user))


@router.get(
    "/datasets/{dataset_id}/dcat",
    tags=["catalogue"],
    response_class=JSONResponse,
    responses={200: {"content": {"application/ld+json": {"schema": {"type": "object"}}}}},
)
def dcat(dataset_id: int, request: Request, user: OptionalUser, session: SessionDep) -> Any:
    """DCAT-AP / HealthDCAT-AP JSON-LD of the version."""
    dataset = lifecycle.visible_dataset(session, dataset_id, user)
    doc = metadata.dcat(session, dataset, base_url=str(request.base_url))
    return JSONResponse(doc, media_type="application/ld+json")


@router.get("/datasets/{dataset_id}/datacite", tags=["catalogue"])
def datacite(dataset_id: int, request: Request, user: OptionalUser, session: SessionDep) -> Any:
    """DataCite JSON of the version (``resourceTypeGeneral=Dataset``, ``IsNewVersionOf``)."""
    dataset = lifecycle.visible_dataset(session, dataset_id, user)
    return metadata.datacite(session, dataset, base_url=str(request.base_url))
