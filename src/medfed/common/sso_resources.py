"""Wire schemas of single sign-on through OpenID Connect (hub, SDK and CLI share them).

The device grant of ``medfed login --sso`` runs through the hub: ``POST
/api/auth/sso/{provider}/device`` starts it at the provider and answers
:class:`DeviceLoginStarted` (the user opens ``verification_uri`` and enters ``user_code``);
the CLI then polls ``POST /api/auth/sso/{provider}/device/token`` with the
``device_code`` every ``interval`` seconds and gets :class:`DeviceLoginResult`:
``pending`` until the user approved, then ``done`` with a hub API token.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from medfed.common.resources import TokenCreated

__all__ = ["DeviceLoginPoll", "DeviceLoginResult", "DeviceLoginStarted", "SsoProviderPublic"]


class SsoProviderPublic(BaseModel):
    name: str
    title: str


class DeviceLoginStarted(BaseModel):
    device_code: str = Field(description="secret of this login; send it back when polling")
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None = None
    expires_in: int
    interval: int


class DeviceLoginPoll(BaseModel):
    device_code: str = Field(min_length=1, max_length=500)


class DeviceLoginResult(BaseModel):
    status: Literal["pending", "done"]
    token: TokenCreated | None = None
