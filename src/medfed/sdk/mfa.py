"""``client.mfa`` (the signed-in user's TOTP second factor) and ``client.visas`` (GA4GH).

Enrolment is two calls: :meth:`Mfa.enrol` returns the secret, its ``otpauth://`` URI and
a QR code (SVG); :meth:`Mfa.confirm` takes the first code of the authenticator app and
returns ten recovery codes, shown once. An account the hub's MFA policy refuses a token
until it has a second factor enrols with its password instead: :func:`enrol_with_password`
then :func:`confirm_with_password`, which also returns a login token.
:meth:`Visas.mine` returns the caller's visas (compact JWTs), :meth:`Visas.attach` adds an
external issuer's visa to an application as evidence.
"""

from __future__ import annotations

import httpx

from medfed.common.identity_resources import (
    ExternalVisaPublic,
    MfaEnrolled,
    MfaStatus,
    RecoveryCodes,
    TotpEnrolment,
)
from medfed.sdk.http import HubHTTP

__all__ = ["Mfa", "Visas", "confirm_with_password", "enrol_with_password"]


class Mfa:
    def __init__(self, http: HubHTTP) -> None:
        self._http = http

    def status(self) -> MfaStatus:
        return MfaStatus.model_validate(self._http.request("GET", "/api/me/mfa"))

    def enrol(self) -> TotpEnrolment:
        return TotpEnrolment.model_validate(self._http.request("POST", "/api/me/mfa/enrol"))

    def confirm(self, otp: str) -> MfaEnrolled:
        data = self._http.request("POST", "/api/me/mfa/confirm", json={"otp": otp})
        return MfaEnrolled.model_validate(data)

    def disable(self, *, otp: str | None = None, recovery_code: str | None = None) -> MfaStatus:
        body = {"otp": otp, "recovery_code": recovery_code}
        return MfaStatus.model_validate(
            self._http.request("POST", "/api/me/mfa/disable", json=body)
        )

    def new_recovery_codes(self, otp: str) -> RecoveryCodes:
        data = self._http.request("POST", "/api/me/mfa/recovery-codes", json={"otp": otp})
        return RecoveryCodes.model_validate(data)

    def reset(self, user_id: int) -> MfaStatus:
        """(Admin) remove a user's second factor."""
        return MfaStatus.model_validate(self._http.request("DELETE", f"/api/users/{user_id}/mfa"))


class Visas:
    def __init__(self, http: HubHTTP) -> None:
        self._http = http

    def mine(self) -> list[str]:
        data = self._http.request("GET", "/ga4gh/passport/v1/visas")
        return [str(v) for v in data["ga4gh_passport_v1"]]

    def passport(self) -> str:
        return str(self._http.request("GET", "/ga4gh/passport/v1")["passport"])

    def attach(self, application_id: int, visa: str) -> ExternalVisaPublic:
        path = f"/api/access/applications/{application_id}/visas"
        return ExternalVisaPublic.model_validate(
            self._http.request("POST", path, json={"visa": visa})
        )

    def of_application(self, application_id: int) -> list[ExternalVisaPublic]:
        path = f"/api/access/applications/{application_id}/visas"
        return [ExternalVisaPublic.model_validate(v) for v in self._http.request("GET", path)]


def enrol_with_password(
    url: str, username: str, password: str, *, http_client: httpx.Client | None = None
) -> TotpEnrolment:
    """Start an enrolment with the password (no token needed)."""
    http = HubHTTP(url, http_client=http_client)
    try:
        body = {"username": username, "password": password}
        return TotpEnrolment.model_validate(http.request("POST", "/api/auth/mfa/enrol", json=body))
    finally:
        http.close()


def confirm_with_password(
    url: str, username: str, password: str, code: str, *, http_client: httpx.Client | None = None
) -> MfaEnrolled:
    """Confirm it with the first code: recovery codes and a login token."""
    http = HubHTTP(url, http_client=http_client)
    try:
        body = {"username": username, "password": password, "code": code}
        return MfaEnrolled.model_validate(http.request("POST", "/api/auth/mfa/confirm", json=body))
    finally:
        http.close()
