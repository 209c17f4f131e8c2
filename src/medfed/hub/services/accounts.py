"""Organizations and users, and the role checks every other service uses.

A superuser (the first admin, made by ``medfed hub init``) may do anything. An ``admin``
manages its own organization: its users and nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.common.errors import Conflict, Forbidden, NotFound
from medfed.common.resources import Role
from medfed.common.security import hash_password
from medfed.hub.db.models import Organization, User
from medfed.hub.services.ledger import actor_of, record


def has_role(user: User, role: Role) -> bool:
    return user.is_superuser or role.value in (user.roles or [])


def require_superuser(user: User, action: str) -> None:
    if not user.is_superuser:
        raise Forbidden(f"{action} needs the hub administrator")


def require_org_admin(user: User, organization_id: int, action: str) -> None:
    if user.is_superuser:
        return
    if Role.admin.value in (user.roles or []) and user.organization_id == organization_id:
        return
    raise Forbidden(f"{action} needs an admin of organization {organization_id}")


def get_organization(session: Session, organization_id: int) -> Organization:
    org = session.get(Organization, organization_id)
    if org is None:
        raise NotFound(f"organization {organization_id} not found")
    return org


def create_organization(session: Session, *, actor: User | None, name: str) -> Organization:
    if actor is not None:
        require_superuser(actor, "creating an organization")
    if session.scalar(select(Organization).where(Organization.name == name)) is not None:
        raise Conflict(f"organization '{name}' exists already")
    org = Organization(name=name)
    session.add(org)
    session.flush()
    record(
        session,
        action="organization.create",
        actor=actor_of(actor),
        objects={"organization": org.id},
    )
    return org


def list_organizations(session: Session) -> list[Organization]:
    return list(session.scalars(select(Organization).order_by(Organization.id)))


def create_user(
    session: Session,
    *,
    actor: User | None,
    username: str,
    password: str,
    organization_id: int,
    roles: Sequence[Role],
    email: str | None = None,
    is_superuser: bool = False,
) -> User:
    get_organization(session, organization_id)
    if actor is not None:
        require_org_admin(actor, organization_id, "creating a user")
        if is_superuser:
            require_superuser(actor, "creating a hub administrator")
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise Conflict(f"user '{username}' exists already")
    user = User(
        username=username,
        email=email,
        password_hash=hash_password(password),
        organization_id=organization_id,
        roles=sorted({r.value for r in roles}),
        is_superuser=is_superuser,
    )
    session.add(user)
    session.flush()
    record(
        session,
        action="user.create",
        actor=actor_of(actor),
        objects={"user": user.id, "organization": organization_id, "roles": list(user.roles)},
    )
    return user


def list_users(session: Session, *, actor: User) -> list[User]:
    query = select(User).order_by(User.id)
    if not actor.is_superuser:
        query = query.where(User.organization_id == actor.organization_id)
    return list(session.scalars(query))


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user
