"""Single sign-on for scripts and the CLI: the device grant (RFC 8628) through the hub.

How it runs: :func:`device_login` picks the provider (the only one the hub lists, or the
one named), asks the hub to start a device login at it, hands the user code and the
verification URL to ``show`` (the CLI prints them; a notebook may open a browser), then
polls the hub every ``interval`` seconds until the user has approved at the provider,
and returns the hub API token the hub made (one day, like a password login). The
provider's client secret stays on the hub; the SDK never sees a provider token.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from medfed.common.errors import BadRequest, Unauthorized
from medfed.common.sso_resources import DeviceLoginResult, DeviceLoginStarted, SsoProviderPublic
from medfed.sdk.http import HubHTTP

__all__ = ["device_login", "list_providers", "print_instructions"]


def print_instructions(start: DeviceLoginStarted) -> None:
    where = start.verification_uri_complete or start.verification_uri
    print(f"Open {where} and enter the code {start.user_code} (valid {start.expires_in} s)")


def list_providers(http: HubHTTP) -> list[SsoProviderPublic]:
    data = http.request("GET", "/api/auth/sso/providers")
    return [SsoProviderPublic.model_validate(p) for p in data]


def device_login(
    http: HubHTTP,
    *,
    provider: str | None = None,
    show: Callable[[DeviceLoginStarted], None] | None = None,
    timeout: float = 900.0,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Run the device login; the plain hub API token once the user approved."""
    if provider is None:
        names = [p.name for p in list_providers(http)]
        if len(names) != 1:
            offered = ", ".join(names) or "none"
            raise BadRequest(f"the hub offers {len(names)} sign-in providers ({offered}); name one")
        provider = names[0]
    start = DeviceLoginStarted.model_validate(
        http.request("POST", f"/api/auth/sso/{provider}/device")
    )
    (show or print_instructions)(start)
    deadline = time.monotonic() + min(timeout, float(start.expires_in))
    while True:
        result = DeviceLoginResult.model_validate(
            http.request(
                "POST",
                f"/api/auth/sso/{provider}/device/token",
                json={"device_code": start.device_code},
            )
        )
        if result.status == "done" and result.token is not None:
            return result.token.token
        if time.monotonic() >= deadline:
            raise Unauthorized("the sign-in was not approved in time; start it again")
        sleep(max(1, start.interval))
