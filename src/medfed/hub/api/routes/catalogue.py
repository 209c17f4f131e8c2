"""Routes for projects, members, nodes (user side) and datasets."""

from __future__ import annotations

from fastapi import APIRouter, status

from medfed.common.resources import (
    DatasetPublic,
    MemberAdd,
    NodeCreate,
    NodeCreated,
    NodePublic,
    ProjectCreate,
    ProjectPublic,
)
from medfed.common.schemas import ColumnSchema
from medfed.hub.api.deps import CurrentUser, SessionDep
from medfed.hub.db.models import Dataset, Node, Project
from medfed.hub.services import datasets, nodes, projects

router = APIRouter(prefix="/api")


def project_public(session: SessionDep, project: Project) -> ProjectPublic:
    public = ProjectPublic.model_validate(project)
    public.members = projects.member_ids(session, project.id)
    return public


def node_public(node: Node) -> NodePublic:
    public = NodePublic.model_validate(node)
    public.online = nodes.is_online(node)
    return public


def dataset_public(dataset: Dataset) -> DatasetPublic:
    return DatasetPublic(
        id=dataset.id,
        node_id=dataset.node_id,
        node_name=dataset.node.name,
        name=dataset.name,
        description=dataset.description,
        columns=[ColumnSchema.model_validate(c) for c in dataset.columns],
        row_count=dataset.row_count,
        summary=dataset.summary,
        updated_at=dataset.updated_at,
    )


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
    _: CurrentUser, session: SessionDep, node_id: int | None = None
) -> list[DatasetPublic]:
    return [dataset_public(d) for d in datasets.list_datasets(session, node_id=node_id)]


@router.get("/datasets/{dataset_id}", tags=["datasets"])
def get_dataset(dataset_id: int, _: CurrentUser, session: SessionDep) -> DatasetPublic:
    return dataset_public(datasets.get_dataset(session, dataset_id))
