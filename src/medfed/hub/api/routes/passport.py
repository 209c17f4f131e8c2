"""Routes for GA4GH Passport visas: the caller's visas and passport, the hub's JWKS, and
visas from trusted external issuers attached to applications. Thin: ``services.visas`` and
``services.visa_trust`` do the work.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status

from medfed.common.identity_resources import ExternalVisaPublic, Passport, VisaEvidence, VisaList
from medfed.hub.api.deps import CurrentUser, NotifierDep, SessionDep, SettingsDep
from medfed.hub.api.limits import Id
from medfed.hub.dispatch import commit
from medfed.hub.services import visa_trust, visas

router = APIRouter()


def _issuer(request: Request, settings: SettingsDep) -> str:
    return visas.issuer_of(settings, str(request.base_url))


@router.get(visas.JWKS_PATH, tags=["ga4gh"])
def jwks(settings: SettingsDep) -> dict[str, Any]:
    """The public keys (JWK Set) that verify the hub's visas and passports."""
    return visas.jwks(settings)


@router.get("/ga4gh/passport/v1/visas", tags=["ga4gh"])
def my_visas(
    request: Request, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> VisaList:
    """The caller's visas: one ControlledAccessGrants per active entitlement, and roles."""
    signed = visas.visas_for(
        session, user=user, settings=settings, issuer=_issuer(request, settings)
    )
    return VisaList(ga4gh_passport_v1=signed)


@router.get("/ga4gh/passport/v1", tags=["ga4gh"])
def my_passport(
    request: Request, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Passport:
    """A passport JWT signed by the hub, holding the caller's visas."""
    signed = visas.passport_for(
        session, user=user, settings=settings, issuer=_issuer(request, settings)
    )
    return Passport(passport=signed)


@router.post(
    "/api/access/applications/{application_id}/visas",
    tags=["access"],
    status_code=status.HTTP_201_CREATED,
)
def attach_visa(
    application_id: Id,
    body: VisaEvidence,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    notifier: NotifierDep,
) -> ExternalVisaPublic:
    """Attach a visa from a trusted issuer as evidence; 422 with the reason if it does not
    verify (issuer, signature, expiry, ga4gh_visa_v1)."""
    row = visa_trust.attach(
        session, actor=user, application_id=application_id, visa=body.visa, settings=settings
    )
    commit(session, notifier)
    return ExternalVisaPublic.model_validate(row)


@router.get("/api/access/applications/{application_id}/visas", tags=["access"])
def list_visas(
    application_id: Id, user: CurrentUser, session: SessionDep
) -> list[ExternalVisaPublic]:
    """The verified visas an application carries (for its DAC and its applicants)."""
    rows = visa_trust.list_for(session, user=user, application_id=application_id)
    return [ExternalVisaPublic.model_validate(r) for r in rows]
