"""``medfed login --sso [--provider NAME]``: single sign-on by the device grant (RFC 8628).

The hub starts the device login at its OpenID provider; this prints the provider's URL
and the user code, waits while the user approves in any browser (the hub polls the
provider), then keeps the hub API token it gets, like a password login does
(:func:`medfed.cli.common.save_credentials`). See :mod:`medfed.sdk.sso`.
"""

from __future__ import annotations

from medfed.cli.common import console, save_credentials
from medfed.common.sso_resources import DeviceLoginStarted
from medfed.sdk.client import Client

__all__ = ["login_sso"]


def _show(start: DeviceLoginStarted) -> None:
    console.print(f"Open {start.verification_uri} in a browser and enter the code:")
    console.print(f"    {start.user_code}", highlight=False)
    if start.verification_uri_complete:
        console.print(f"(or open {start.verification_uri_complete})", highlight=False)
    console.print(f"Waiting for you to sign in (up to {start.expires_in} s)…")


def login_sso(url: str, provider: str | None) -> None:
    session = Client.login_sso(url, provider, show=_show)
    assert session.token is not None
    save_credentials(url, session.token)
    me = session.users.me()
    console.print(f"logged in to {url} as {me.username} by single sign-on ({', '.join(me.roles)})")
