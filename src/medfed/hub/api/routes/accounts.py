"""Routes for health, login, tokens, organizations and users (thin: services do the work)."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from medfed._version import __version__
from medfed.common.resources import (
    Health,
    LoginRequest,
    OrganizationCreate,
    OrganizationPublic,
    Role,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    UserCreate,
    UserPublic,
)
from medfed.hub.api.deps import CurrentUser, SessionDep, throttled_login
from medfed.hub.services import accounts, auth

router = APIRouter(prefix="/api")


@router.get("/health", tags=["health"])
def health() -> Health:
    return Health(status="ok", version=__version__)


@router.post("/auth/login", tags=["auth"], status_code=status.HTTP_201_CREATED)
def login(body: LoginRequest, request: Request, session: SessionDep) -> TokenCreated:
    """A login token; after repeated failures the account and the address wait (429).

    An account with TOTP sends ``otp`` (or a ``recovery_code``) too; without one the
    answer is 401 starting "a one-time code is needed".
    """
    token, plain = throttled_login(
        request,
        session,
        body.username,
        body.password,
        days=1,
        otp=body.otp,
        recovery_code=body.recovery_code,
    )
    session.commit()
    return TokenCreated.model_validate(
        {**TokenPublic.model_validate(token).model_dump(), "token": plain}
    )


@router.get("/me", tags=["auth"])
def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)


@router.get("/tokens", tags=["auth"])
def list_tokens(user: CurrentUser, session: SessionDep) -> list[TokenPublic]:
    return [TokenPublic.model_validate(t) for t in auth.list_tokens(session, user=user)]


@router.post("/tokens", tags=["auth"], status_code=status.HTTP_201_CREATED)
def create_token(body: TokenCreate, user: CurrentUser, session: SessionDep) -> TokenCreated:
    token, plain = auth.create_token(session, user=user, name=body.name, days=body.days)
    session.commit()
    return TokenCreated.model_validate(
        {**TokenPublic.model_validate(token).model_dump(), "token": plain}
    )


@router.delete("/tokens/{token_id}", tags=["auth"])
def revoke_token(token_id: int, user: CurrentUser, session: SessionDep) -> TokenPublic:
    token = auth.revoke_token(session, user=user, token_id=token_id)
    session.commit()
    return TokenPublic.model_validate(token)


@router.get("/organizations", tags=["organizations"])
def list_organizations(_: CurrentUser, session: SessionDep) -> list[OrganizationPublic]:
    return [OrganizationPublic.model_validate(o) for o in accounts.list_organizations(session)]


@router.post("/organizations", tags=["organizations"], status_code=status.HTTP_201_CREATED)
def create_organization(
    body: OrganizationCreate, user: CurrentUser, session: SessionDep
) -> OrganizationPublic:
    org = accounts.create_organization(session, actor=user, name=body.name)
    session.commit()
    return OrganizationPublic.model_validate(org)


@router.get("/users", tags=["users"])
def list_users(user: CurrentUser, session: SessionDep) -> list[UserPublic]:
    return [UserPublic.model_validate(u) for u in accounts.list_users(session, actor=user)]


@router.post("/users", tags=["users"], status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, user: CurrentUser, session: SessionDep) -> UserPublic:
    created = accounts.create_user(
        session,
        actor=user,
        username=body.username,
        password=body.password,
        email=body.email,
        organization_id=body.organization_id,
        roles=[Role(r) for r in body.roles],
    )
    session.commit()
    return UserPublic.model_validate(created)
