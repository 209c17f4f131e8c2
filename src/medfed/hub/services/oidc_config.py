"""Settings of the OpenID Connect providers a hub trusts (issue 15).

``HubSettings.oidc_providers`` is a list of :class:`OidcProvider`; from the environment it
is JSON (``MEDFED_OIDC_PROVIDERS='[{"name": "keycloak", "issuer": "https://…", …}]'``),
like every other list setting of the hub. Several providers at once are fine: an eduGAIN
proxy and a hospital's own. A provider's settings say where it is (its issuer; the hub
reads ``/.well-known/openid-configuration`` under it), which clients the hub is registered
as (one confidential web client for the authorization code flow, optionally a second one
for the device grant of ``medfed login --sso``), which scopes to ask for, and how claims
become organization and roles (:class:`GroupRole`). MFA is shown by an ``amr`` value in
``mfa_amr`` or an ``acr`` value in ``mfa_acr``.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medfed.common.resources import Role

__all__ = ["GroupRole", "OidcProvider"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class GroupRole(BaseModel):
    """One line of the claim mapping: who carries ``group`` gets ``role`` in ``organization``.

    ``organization`` is the name of a hub organization that exists; left out, the
    provider's ``organization``.
    """

    model_config = ConfigDict(extra="forbid")

    group: str = Field(min_length=1, max_length=500)
    role: Role
    organization: str | None = None


class OidcProvider(BaseModel):
    """One OpenID provider and how the hub uses it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="short name in URLs and on the CLI (a-z, 0-9, - and _)")
    title: str = Field(default="", description="shown on the button: 'Sign in with <title>'")
    issuer: str = Field(description="the provider's issuer URL (its iss claim)")
    client_id: str
    client_secret: str = Field(default="", repr=False)
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    device_client_id: str | None = Field(
        default=None, description="client for the device grant; unset: client_id"
    )
    device_client_secret: str | None = Field(
        default=None, repr=False, description="unset: client_secret ('' for a public client)"
    )
    organization: str = Field(
        description="organization (by name) a new user without a mapped organization joins"
    )
    groups_claim: str = Field(
        default="groups", description="claim holding a list of groups (or entitlements)"
    )
    username_claim: str = Field(
        default="preferred_username", description="claim proposed as the hub username"
    )
    role_mapping: list[GroupRole] = Field(default_factory=list)
    default_roles: list[Role] = Field(
        default_factory=lambda: [Role.researcher],
        description="roles every user of this provider gets (also from the mapping's source)",
    )
    mfa_amr: list[str] = Field(
        default_factory=lambda: ["mfa", "otp", "hwk"],
        description="amr values that show a second factor",
    )
    mfa_acr: list[str] = Field(
        default_factory=list, description="acr values that show a second factor"
    )
    redirect_uri: str | None = Field(
        default=None,
        description="the hub's callback URL as registered at the provider; unset: derived "
        "from the request (https://HUB/auth/sso/NAME/callback)",
    )
    leeway_seconds: int = Field(default=60, ge=0, le=300, description="clock skew allowed")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a provider name is 1-64 of a-z, 0-9, '-' and '_'")
        return value

    @field_validator("issuer")
    @classmethod
    def _check_issuer(cls, value: str) -> str:
        if not value.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ValueError("an issuer URL must be https (http only on this machine)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_scopes(self) -> OidcProvider:
        if "openid" not in self.scopes:
            raise ValueError(f"provider '{self.name}': scopes must include 'openid'")
        return self

    @property
    def label(self) -> str:
        return self.title or self.name

    @property
    def device_client(self) -> tuple[str, str]:
        """Client id and secret ('' for a public client) of the device grant."""
        secret = self.device_client_secret
        return (
            self.device_client_id or self.client_id,
            self.client_secret if secret is None else secret,
        )

    def mfa_shown(self, claims: dict[str, object]) -> bool:
        """Whether the ID token's ``amr`` or ``acr`` shows a second factor."""
        amr = claims.get("amr")
        if isinstance(amr, list) and any(str(v) in self.mfa_amr for v in amr):
            return True
        acr = claims.get("acr")
        return isinstance(acr, str) and acr in self.mfa_acr
