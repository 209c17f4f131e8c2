"""Wire schemas of multi-factor login and GA4GH Passport visas (hub, SDK and CLI share them).

The hub's login answers 401 with a message that starts with :data:`OTP_NEEDED` when the
password was right and the account's second factor is missing, and with
:data:`ENROL_NEEDED` when policy wants a second factor the account has not enrolled yet;
the CLI and SDK recognise these prefixes (the status alone is the same 401 as a wrong
password).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ENROL_NEEDED",
    "OTP_NEEDED",
    "SSO_ONLY",
    "ExternalVisaPublic",
    "MfaCode",
    "MfaEnrolConfirm",
    "MfaEnrolStart",
    "MfaEnrolled",
    "MfaStatus",
    "Passport",
    "RecoveryCodes",
    "TotpEnrolment",
    "VisaEvidence",
    "VisaList",
]

#: start of the 401 message: password right, a one-time code (or recovery code) missing
OTP_NEEDED = "a one-time code is needed"
#: start of the 401 message: policy needs a second factor this account has not enrolled
ENROL_NEEDED = "this account must enrol a second factor"
#: start of the 403 message when the hub has local passwords turned off
SSO_ONLY = "password login is turned off on this hub"

OTP_PATTERN = r"^[0-9]{6}$"
RECOVERY_PATTERN = r"^[A-Za-z0-9 -]{12,20}$"


class MfaEnrolStart(BaseModel):
    """Start a TOTP enrolment with the password (no session needed)."""

    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=200)


class MfaEnrolConfirm(MfaEnrolStart):
    """Finish it with the first code from the authenticator app; answers a login token too."""

    code: str = Field(pattern=OTP_PATTERN, description="6 digits from the authenticator app")
    days: int = Field(default=1, ge=1, le=30, description="lifetime of the login token")


class MfaCode(BaseModel):
    """A current second factor: a TOTP code or one recovery code (one of the two)."""

    otp: str | None = Field(default=None, pattern=OTP_PATTERN)
    recovery_code: str | None = Field(default=None, pattern=RECOVERY_PATTERN)


class TotpEnrolment(BaseModel):
    """A pending TOTP secret: add it to an authenticator app, then confirm with a code."""

    secret: str = Field(description="base32 secret (RFC 4648), for typing in by hand")
    otpauth_uri: str = Field(description="otpauth://totp/… (the QR code holds it)")
    qr_svg: str = Field(description="the URI as a QR code, SVG markup")


class RecoveryCodes(BaseModel):
    """Single-use recovery codes, shown once (the hub keeps only their hashes)."""

    recovery_codes: list[str]


class MfaEnrolled(RecoveryCodes):
    """A confirmed enrolment: the recovery codes and, when enrolled by password, a token."""

    token: str | None = None
    expires_at: datetime | None = None


class MfaStatus(BaseModel):
    enrolled: bool
    pending: bool
    required: bool = Field(description="the hub's policy needs a second factor for this user")
    confirmed_at: datetime | None = None
    recovery_codes_left: int = 0


class VisaList(BaseModel):
    """The caller's visas as signed JWTs (the ``ga4gh_passport_v1`` claim of a passport)."""

    ga4gh_passport_v1: list[str]


class Passport(BaseModel):
    """A passport: one JWT signed by the hub whose ``ga4gh_passport_v1`` claim lists visas."""

    passport: str


class VisaEvidence(BaseModel):
    """A visa JWT from a trusted external issuer, attached to an application as evidence."""

    visa: str = Field(min_length=10, max_length=16_000)


class ExternalVisaPublic(BaseModel):
    """What the hub verified in an external visa (shown to the DAC)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    application_id: int
    issuer: str
    subject: str
    visa_type: str
    value: str
    source: str
    asserted_by: str | None
    asserted_at: datetime | None
    expires_at: datetime
    claims: dict[str, Any]
    jwt_sha256: str
    created_at: datetime
