"""``medfed mfa …``: the signed-in user's TOTP second factor; and password login with a code.

``medfed mfa enrol`` prints the secret, its otpauth:// URI and a QR code in the terminal,
asks for the first code of the authenticator app and prints the ten recovery codes
once. With ``--username`` it enrols by password instead of a saved token (for an account
the hub's MFA policy refuses a token until it has a second factor) and saves the login
token it gets. :func:`password_login` is what ``medfed login`` runs: when the hub answers
that a one-time code is needed and none was given, it asks for one.
"""

from __future__ import annotations

import io

import segno
import typer

from medfed.cli.common import TokenOption, UrlOption, client, console, save_credentials
from medfed.common.errors import Unauthorized
from medfed.common.identity_resources import OTP_NEEDED, MfaEnrolled, TotpEnrolment
from medfed.sdk.client import Client
from medfed.sdk.mfa import confirm_with_password, enrol_with_password

app = typer.Typer(help="Second factor (TOTP) of your account.", no_args_is_help=True)


def password_login(
    url: str,
    username: str,
    password: str,
    *,
    otp: str | None = None,
    recovery_code: str | None = None,
) -> Client:
    """``Client.login``, asking for a one-time code when the hub needs one."""
    try:
        return Client.login(url, username, password, otp=otp, recovery_code=recovery_code)
    except Unauthorized as exc:
        if otp or recovery_code or not exc.message.startswith(OTP_NEEDED):
            raise
    code = typer.prompt("One-time code (or a recovery code)").strip()
    if code.isdigit() and len(code) == 6:
        return Client.login(url, username, password, otp=code)
    return Client.login(url, username, password, recovery_code=code)


def _show(enrolment: TotpEnrolment) -> None:
    out = io.StringIO()
    segno.make(enrolment.otpauth_uri, error="m").terminal(out=out, compact=True)
    console.print(out.getvalue(), highlight=False, markup=False)
    console.print(f"secret: {enrolment.secret}", highlight=False)
    console.print(f"URI:    {enrolment.otpauth_uri}", highlight=False, markup=False)


def _codes(enrolled: MfaEnrolled) -> None:
    console.print("recovery codes (each works once; shown only now):")
    for code in enrolled.recovery_codes:
        console.print(f"  {code}", highlight=False)


@app.command("enrol")
def enrol(
    url: str | None = UrlOption,
    token: str | None = TokenOption,
    username: str | None = typer.Option(
        None, "--username", help="enrol by password (no token yet): this account"
    ),
    password: str | None = typer.Option(None, hide_input=True, envvar="MEDFED_PASSWORD"),
    code: str | None = typer.Option(None, "--code", help="the app's first code (else asked)"),
) -> None:
    """Set up TOTP: scan the QR code, then give the app's first code."""
    if username is not None:
        if not url:
            raise typer.BadParameter("needs --url (or MEDFED_URL)", param_hint="--url")
        password = password or typer.prompt("Password", hide_input=True)
        _show(enrol_with_password(url, username, password))
        first = code or typer.prompt("Code from the app")
        enrolled = confirm_with_password(url, username, password, first.strip())
        assert enrolled.token is not None
        save_credentials(url, enrolled.token)
        _codes(enrolled)
        console.print(f"TOTP enrolled; logged in to {url} as {username}")
        return
    hub = client(url, token)
    _show(hub.mfa.enrol())
    first = code or typer.prompt("Code from the app")
    _codes(hub.mfa.confirm(first.strip()))
    console.print("TOTP enrolled")


@app.command("disable")
def disable(
    url: str | None = UrlOption,
    token: str | None = TokenOption,
    otp: str | None = typer.Option(None, "--otp", help="a current code"),
    recovery_code: str | None = typer.Option(None, "--recovery-code"),
) -> None:
    """Turn TOTP off (needs a current code or a recovery code)."""
    if not otp and not recovery_code:
        otp = typer.prompt("Current code from the app").strip()
    status = client(url, token).mfa.disable(otp=otp, recovery_code=recovery_code)
    console.print("TOTP disabled" if not status.enrolled else "TOTP still enrolled")
    if status.required:
        console.print("note: the hub's policy needs a second factor for your roles; enrol again")


@app.command("status")
def status(url: str | None = UrlOption, token: str | None = TokenOption) -> None:
    """Whether TOTP is enrolled, required, and how many recovery codes are left."""
    state = client(url, token).mfa.status()
    console.print(
        f"enrolled: {state.enrolled}  required: {state.required}  "
        f"recovery codes left: {state.recovery_codes_left}"
    )


@app.command("reset")
def reset(
    user_id: int = typer.Argument(..., help="the user whose second factor to remove"),
    url: str | None = UrlOption,
    token: str | None = TokenOption,
) -> None:
    """(Admin) remove a user's second factor, e.g. after a lost device."""
    client(url, token).mfa.reset(user_id)
    console.print(f"second factor of user {user_id} removed")
