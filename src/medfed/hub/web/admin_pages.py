"""Organization admin pages: users and roles, nodes, datasets and their lifecycle actions.

An admin of an organization (or the hub admin) sees its users and adds users with roles
(``accounts.create_user``, as ``POST /api/users``); everyone with the admin or steward
role sees the organization's nodes and the datasets they hold, and a steward moves a
dataset through its lifecycle with the buttons the catalogue service allows
(``catalogue.transition``, as the catalogue API). Which buttons show is only a hint: the
service decides, and a refused action comes back as an error page with its reason.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from medfed.common.errors import BadRequest, Forbidden
from medfed.common.resources import Role
from medfed.hub.api.deps import SessionDep
from medfed.hub.db.models import User
from medfed.hub.services import accounts, datasets, nodes
from medfed.hub.web import catalogue_views
from medfed.hub.web.session import CheckedVisitor, PageRoute, VisitorDep, redirect, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)

ROLES = [r.value for r in Role]


def _org_of(user: User, organization: int | None) -> int:
    if organization is not None and user.is_superuser:
        return organization
    return user.organization_id


def _require_admin_or_steward(user: User) -> None:
    if not (accounts.has_role(user, Role.admin) or accounts.has_role(user, Role.steward)):
        raise Forbidden("the organization pages need the admin or steward role")


@router.get("/admin")
def admin_page(
    request: Request, visitor: VisitorDep, session: SessionDep, organization: int | None = None
) -> Response:
    user = visitor.require()
    _require_admin_or_steward(user)
    org_id = _org_of(user, organization)
    org = accounts.get_organization(session, org_id)
    users = [u for u in accounts.list_users(session, actor=user) if u.organization_id == org_id]
    org_nodes = [n for n in nodes.list_nodes(session) if n.organization_id == org_id]
    node_ids = {n.id for n in org_nodes}
    held = [d for d in datasets.list_datasets(session) if d.node_id in node_ids]
    context = {
        "org": org,
        "organizations": accounts.list_organizations(session) if user.is_superuser else [],
        "users": users,
        "nodes": [(n, nodes.is_online(n)) for n in org_nodes],
        "datasets": [catalogue_views.lifecycle_row(session, d, user) for d in held],
        "roles": ROLES,
    }
    return render(request, "admin.html", context)


@router.post("/admin/users")
def admin_create_user(
    visitor: CheckedVisitor,
    session: SessionDep,
    username: Annotated[str, Form(min_length=2, max_length=100)],
    password: Annotated[str, Form(min_length=8, max_length=200)],
    organization_id: Annotated[int, Form()],
    roles: Annotated[list[str], Form()],
    email: Annotated[str, Form(max_length=300)] = "",
) -> Response:
    user = visitor.require()
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise BadRequest(f"unknown role(s) {unknown}; known: {', '.join(ROLES)}")
    accounts.create_user(
        session,
        actor=user,
        username=username.strip(),
        password=password,
        email=email.strip() or None,
        organization_id=organization_id,
        roles=[Role(r) for r in roles],
    )
    session.commit()
    return redirect(f"/admin?organization={organization_id}")


@router.post("/admin/datasets/{dataset_id}/lifecycle")
def admin_dataset_lifecycle(
    dataset_id: int,
    visitor: CheckedVisitor,
    session: SessionDep,
    action: Annotated[str, Form(min_length=1, max_length=40)],
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    user = visitor.require()
    catalogue_views.change_lifecycle(
        session, actor=user, dataset_id=dataset_id, action=action, reason=reason
    )
    session.commit()
    return redirect(f"/datasets/{dataset_id}")
