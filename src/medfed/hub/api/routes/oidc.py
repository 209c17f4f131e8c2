"""Routes of single sign-on through OpenID Connect (thin: ``services/oidc_flow`` works).

Pages (not in the OpenAPI schema): ``GET /auth/sso/{provider}/start`` sends the browser to
the provider (state in a short-lived cookie limited to ``/auth/sso``);
``GET /auth/sso/{provider}/callback`` finishes the login and sets the same session cookie
as the password login, or shows the login page with the reason. The login page lists the
providers through the Jinja global ``sso_providers``.

API: ``GET /api/auth/sso/providers`` (public), and the device grant of
``medfed login --sso``: ``POST /api/auth/sso/{provider}/device`` and
``POST /api/auth/sso/{provider}/device/token`` (see :mod:`medfed.common.sso_resources`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from medfed.common.errors import MedfedError, Unauthorized
from medfed.common.resources import TokenCreated, TokenPublic
from medfed.common.sso_resources import (
    DeviceLoginPoll,
    DeviceLoginResult,
    DeviceLoginStarted,
    SsoProviderPublic,
)
from medfed.hub.api.deps import SessionDep, SettingsDep
from medfed.hub.services import oidc_flow
from medfed.hub.services.oidc_config import OidcProvider
from medfed.hub.services.oidc_provider import ProviderClient, ProviderRegistry
from medfed.hub.web.session import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    PageRoute,
    render,
    templates,
)

STATE_COOKIE = "medfed_sso_state"
STATE_PATH = "/auth/sso"

api = APIRouter(prefix="/api/auth/sso", tags=["auth"])
pages = APIRouter(prefix="/auth/sso", route_class=PageRoute, include_in_schema=False)
router = APIRouter()


def get_registry(request: Request) -> ProviderRegistry:
    registry: ProviderRegistry | None = getattr(request.app.state, "oidc", None)
    if registry is None:
        registry = ProviderRegistry(request.app.state.settings.oidc_providers)
        request.app.state.oidc = registry
    return registry


Registry = Annotated[ProviderRegistry, Depends(get_registry)]


def sso_providers(request: Request) -> list[OidcProvider]:
    """The providers for the login page's buttons (a Jinja global)."""
    return get_registry(request).configs()


templates.env.globals["sso_providers"] = sso_providers


def _safe_next(target: str) -> str:
    local = target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if local else "/"


def _redirect_uri(request: Request, client: ProviderClient) -> str:
    if client.config.redirect_uri:
        return client.config.redirect_uri
    return str(request.url_for("sso_callback", provider=client.config.name))


# ---------------------------------------------------------------------------- pages
@pages.get("/{provider}/start")
def sso_start(
    provider: str, request: Request, session: SessionDep, registry: Registry, next: str = "/"
) -> Response:
    client = registry.get(provider)
    url, state = oidc_flow.start_web_login(
        session,
        client=client,
        redirect_uri=_redirect_uri(request, client),
        next_url=_safe_next(next),
    )
    session.commit()
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        STATE_COOKIE,
        state,
        max_age=oidc_flow.STATE_SECONDS,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path=STATE_PATH,
    )
    return response


@pages.get("/{provider}/callback", name="sso_callback")
def sso_callback(
    provider: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    registry: Registry,
    state: Annotated[str, Query(max_length=200)] = "",
    code: Annotated[str, Query(max_length=2000)] = "",
    error: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    client = registry.get(provider)
    try:
        if error or not code:
            raise Unauthorized(
                f"'{client.config.label}' did not sign you in ({error or 'no code'})"
            )
        signed = oidc_flow.finish_web_login(
            session,
            client=client,
            state=state,
            cookie_state=request.cookies.get(STATE_COOKIE),
            code=code,
            mfa_required_roles=settings.mfa_required_roles,
        )
    except MedfedError as exc:
        session.rollback()
        page = render(
            request, "login.html", {"error": exc.message, "next": "/"}, status_code=exc.status_code
        )
        page.delete_cookie(STATE_COOKIE, path=STATE_PATH)
        return page
    session.commit()
    response = RedirectResponse(signed.next_url or "/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        signed.plain,
        max_age=24 * 3600,
        httponly=True,
        samesite="lax",
        secure=not settings.dev_mode,
        path="/",
    )
    response.delete_cookie(STATE_COOKIE, path=STATE_PATH)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


# ---------------------------------------------------------------------------- API
@api.get("/providers")
def list_providers(registry: Registry) -> list[SsoProviderPublic]:
    """The OpenID providers this hub accepts (public: the login page and the CLI ask)."""
    return [SsoProviderPublic(name=p.name, title=p.label) for p in registry.configs()]


@api.post("/{provider}/device")
def start_device(provider: str, registry: Registry) -> DeviceLoginStarted:
    """Start a device login at the provider (RFC 8628) for ``medfed login --sso``."""
    start = oidc_flow.start_device_login(client=registry.get(provider))
    return DeviceLoginStarted(
        device_code=start.device_code,
        user_code=start.user_code,
        verification_uri=start.verification_uri,
        verification_uri_complete=start.verification_uri_complete,
        expires_in=start.expires_in,
        interval=start.interval,
    )


@api.post("/{provider}/device/token")
def poll_device(
    provider: str,
    body: DeviceLoginPoll,
    session: SessionDep,
    settings: SettingsDep,
    registry: Registry,
) -> DeviceLoginResult:
    """Pending until the user approved at the provider, then a hub API token (1 day)."""
    signed = oidc_flow.poll_device_login(
        session,
        client=registry.get(provider),
        device_code=body.device_code,
        mfa_required_roles=settings.mfa_required_roles,
    )
    if signed is None:
        return DeviceLoginResult(status="pending")
    session.commit()
    token = TokenCreated.model_validate(
        {**TokenPublic.model_validate(signed.token).model_dump(), "token": signed.plain}
    )
    return DeviceLoginResult(status="done", token=token)


router.include_router(api)
router.include_router(pages)
