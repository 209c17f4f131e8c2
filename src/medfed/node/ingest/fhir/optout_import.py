"""``medfed node optout import-fhir DIR``: the research Consents of an export, alone.

How it runs: the export's Patients and Consents are read and validated like an ingest
(streamed by :func:`~.bundle.iter_bundle`: only the Patients' keys and the Consents are
kept); each counting Consent (:mod:`.consent`) becomes a register
decision about the patient's pseudonym — or, with a CDM of an earlier FHIR ingest, about
the pseudonym's ``person_id`` there, which is how OMOP datasets know their persons. The
CDM is opened read-only; nothing but the register is written.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import duckdb

from medfed.common.errors import BadRequest
from medfed.node.ingest.fhir.bundle import iter_bundle
from medfed.node.ingest.fhir.consent import consent_event
from medfed.node.ingest.fhir.deid import FhirDeid, patient_key
from medfed.node.ingest.keys import derive_key
from medfed.node.stores.optout import OptOutRegister

__all__ = ["import_consents"]


def import_consents(
    directory: Path, *, register: OptOutRegister, secret: str, cdm: Path | None = None
) -> int:
    """Record the export's research decisions; returns how many were new."""
    keys: dict[str, str] = {}
    consents: list[Any] = []
    for resource in iter_bundle(Path(directory), Counter()):
        kind = resource.get_resource_type()
        if kind == "Patient":
            keys[str(resource.id)] = patient_key(resource)
        elif kind == "Consent":
            consents.append(resource)
    deid = FhirDeid(secret)
    resolve: dict[str, int] | None = None
    if cdm is not None:
        con = duckdb.connect(str(cdm), read_only=True)
        try:
            deid.load_persons(con)
        except duckdb.Error:
            raise BadRequest(f"optout: {cdm.name} holds no person map of a FHIR ingest") from None
        finally:
            con.close()
        resolve = deid.resolve()

    def person(fhir_id: str) -> str | None:
        pseudonym = deid.pseudonym(keys.get(fhir_id, fhir_id))
        if resolve is None:
            return pseudonym
        found = resolve.get(pseudonym)
        return str(found) if found is not None else None

    key = derive_key(secret, "fhir-consent")
    events = [
        event
        for consent in consents
        if (event := consent_event(consent, person=person, key=key)) is not None
    ]
    return register.import_events(events)
