"""FHIR ``Consent`` → opt-out register decisions (:mod:`medfed.node.stores.optout`).

How it runs: a Consent counts when its ``status`` is ``active``, it is about research —
a ``purpose`` coding ``HRESERCH`` (v3-ActReason) on the provision or its sub-provisions,
or a ``scope`` coded ``research`` (consentscope) — and its provision ``type`` is ``deny``
(an opt-out) or ``permit`` (consent given; when later than a deny, the opt-out ends).
Its time is ``dateTime``, else the provision period's start. The patient is the node's
pseudonym of the Patient the reference names (its MRN where the export holds the
Patient, else the referenced id), so the register holds no hospital identifier, and when
a CDM is given the pseudonym's ``person_id``. The event's ``ref`` is a keyed hash of the
Consent's id and version, so importing the same export twice adds nothing. Any other
Consent (a treatment consent, an inactive one, one with no patient) is skipped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from medfed.node.ingest.fhir.deid import as_datetime
from medfed.node.ingest.keys import hmac_hex
from medfed.node.stores.optout import ConsentEvent

__all__ = ["consent_event", "is_research"]

_RESEARCH_PURPOSE = "HRESERCH"
_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def _codes(codeable: Any) -> set[tuple[str, str]]:
    return {
        (str(c.system or ""), str(c.code or "")) for c in (getattr(codeable, "coding", None) or [])
    }


def _purposes(provision: Any) -> set[str]:
    if provision is None:
        return set()
    found = {str(p.code or "") for p in (getattr(provision, "purpose", None) or [])}
    for sub in getattr(provision, "provision", None) or []:
        found |= _purposes(sub)
    return found


def is_research(consent: Any) -> bool:
    """The Consent is about research use (purpose HRESERCH or scope research)."""
    if _RESEARCH_PURPOSE in _purposes(consent.provision):
        return True
    return any(code == "research" for _, code in _codes(consent.scope))


def consent_event(
    consent: Any, *, person: Callable[[str], str | None], key: bytes
) -> ConsentEvent | None:
    """The register decision of one Consent model, or None when it does not count.

    ``person`` turns the referenced Patient id into the register's person (None when
    unknown); ``key`` keys the Consent's ``ref``.
    """
    if str(consent.status or "") != "active" or not is_research(consent):
        return None
    decision = str(getattr(consent.provision, "type", "") or "")
    if decision not in ("deny", "permit"):
        return None
    reference = str(getattr(consent.patient, "reference", "") or "")
    if "/" not in reference:
        return None
    who = person(reference.rsplit("/", 1)[1])
    if who is None:
        return None
    period = getattr(consent.provision, "period", None)
    when = as_datetime(consent.dateTime) or as_datetime(getattr(period, "start", None))
    if when is None:
        return None
    version = str(getattr(consent.meta, "versionId", "") or "") if consent.meta else ""
    ref = hmac_hex(key, "consent", str(consent.id or ""), version, decision, when.isoformat())
    return ConsentEvent(
        person=who,
        at=when.replace(tzinfo=dt.UTC),
        decision="deny" if decision == "deny" else "permit",
        ref=ref[:32],
    )
