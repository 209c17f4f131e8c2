"""GA4GH Passport visas: issued by the hub for entitlements, accepted from trusted issuers.

The hub is served over real HTTP (uvicorn on 127.0.0.1) and its visas are verified with
PyJWT — a JWT library independent of the joserfc that signs them — against the JWKS that
PyJWT fetches from ``/.well-known/jwks.json``. The world's researcher holds two active
entitlements (one per organization): each gives a ``ControlledAccessGrants`` visa with
the dataset's persistent-id URL, the project and the end date; a revoked and an expired
entitlement give none; a visa never outlives its entitlement.

The external issuer is a JWKS document served by a stdlib HTTP server in the test; its
visas are signed with PyJWT. A valid one is attached to an application and shown to the
DAC; an untrusted issuer, a forged signature, an expired visa, a token without
``ga4gh_visa_v1`` and an HMAC-signed one are each refused with 422 and the reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from hubtools import SQLITE_ONLY, World
from livehub import serve_app, serve_json
from medfed.hub.config import HubSettings

REMS = "https://rems.example.org"
JWKS_PATH = "/api/jwk"


def _visas(api: Any, headers: dict[str, str]) -> list[str]:
    response = api.get("/ga4gh/passport/v1/visas", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["ga4gh_passport_v1"])


def _grants(decoded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in decoded if v["ga4gh_visa_v1"]["type"] == "ControlledAccessGrants"]


def test_visas_verify_with_an_independent_library(world: World) -> None:
    rita = world.researcher
    entitlements = world.api.get("/api/access/entitlements", headers=rita.headers).json()
    ends = {e["dataset_id"]: datetime.fromisoformat(e["ends_at"]) for e in entitlements}
    with serve_app(world.app) as url:
        signed = httpx.get(f"{url}/ga4gh/passport/v1/visas", headers=rita.headers, timeout=60)
        assert signed.status_code == 200, signed.text
        keys = jwt.PyJWKClient(f"{url}/.well-known/jwks.json")
        decoded = []
        for token in signed.json()["ga4gh_passport_v1"]:
            key = keys.get_signing_key_from_jwt(token)
            assert jwt.get_unverified_header(token)["kid"] == key.key_id
            decoded.append(
                jwt.decode(
                    token,
                    key.key,
                    algorithms=["ES256"],
                    issuer=url,
                    options={"require": ["exp", "iat", "iss", "sub"]},
                )
            )
        passport = httpx.get(f"{url}/ga4gh/passport/v1", headers=rita.headers, timeout=60).json()
        outer = jwt.decode(
            passport["passport"],
            keys.get_signing_key_from_jwt(passport["passport"]).key,
            algorithms=["ES256"],
            issuer=url,
        )
    assert len(outer["ga4gh_passport_v1"]) == len(decoded)

    grants = _grants(decoded)
    assert sorted(g["medfed"]["dataset_id"] for g in grants) == sorted(ends)
    for grant in grants:
        visa, extra = grant["ga4gh_visa_v1"], grant["medfed"]
        dataset = world.api.get(f"/api/datasets/{extra['dataset_id']}", headers=rita.headers).json()
        assert visa["value"] == f"{url}/pid/{dataset['pid'] or 'mfd.' + str(dataset['id'])}"
        assert visa["by"] == "dac" and visa["source"].startswith(f"{url}/organizations/")
        assert extra["project_id"] == world.project_id and extra["project"] == "Project P"
        end = ends[extra["dataset_id"]]
        assert datetime.fromisoformat(extra["ends_at"]) == end
        assert grant["exp"] <= end.timestamp()
        assert grant["exp"] - grant["iat"] <= 3600 and grant["sub"] == str(rita.id)
    roles = [v["ga4gh_visa_v1"]["value"] for v in decoded if v not in grants]
    assert roles == ["researcher@org-a"]
    # an outsider of the project holds no grant
    assert (
        _grants(
            [
                jwt.decode(t, options={"verify_signature": False})
                for t in _visas(world.api, world.outsider.headers)
            ]
        )
        == []
    )


@SQLITE_ONLY
def test_revoked_or_expired_entitlements_give_no_visa(world: World) -> None:
    api, rita = world.api, world.researcher
    entitlements = api.get("/api/access/entitlements", headers=rita.headers).json()
    assert len(entitlements) == 2
    revoked, expiring = entitlements
    response = api.post(
        f"/api/access/applications/{revoked['application_id']}/revoke",
        json={"comment": "ended by the DAC"},
        headers=world.admin.headers,
    )
    assert response.status_code == 200, response.text
    soon = datetime.now(UTC) + timedelta(minutes=10)
    with world.app.state.sessionmaker() as session:
        session.execute(
            sa.text("UPDATE entitlements SET ends_at = :t WHERE id = :i"),
            {"t": soon, "i": expiring["id"]},
        )
        session.commit()
    claims = [jwt.decode(t, options={"verify_signature": False}) for t in _visas(api, rita.headers)]
    grants = _grants(claims)
    # the revoked one is gone; the one ending in 10 minutes gives a visa that ends with it
    assert [g["medfed"]["entitlement_id"] for g in grants] == [expiring["id"]]
    assert grants[0]["exp"] == int(soon.timestamp())
    with world.app.state.sessionmaker() as session:
        past = datetime.now(UTC) - timedelta(seconds=1)
        session.execute(
            sa.text("UPDATE entitlements SET ends_at = :t WHERE id = :i"),
            {"t": past, "i": expiring["id"]},
        )
        session.commit()
    claims = [jwt.decode(t, options={"verify_signature": False}) for t in _visas(api, rita.headers)]
    assert _grants(claims) == []


# ------------------------------------------------------------------ external issuer


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    public: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    return {**public, "kid": kid, "use": "sig", "alg": "ES256"}


@pytest.fixture
def rems(hub_settings: HubSettings) -> Iterator[ec.EllipticCurvePrivateKey]:
    """A trusted external issuer: its JWKS served over HTTP, named in the hub's settings."""
    key = _key()
    with serve_json({JWKS_PATH: {"keys": [_jwk(key, "rems-1")]}}) as url:
        hub_settings.trusted_visa_issuers = {REMS: url + JWKS_PATH}
        yield key


def _rems_visa(key: Any, *, alg: str = "ES256", **changes: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": REMS,
        "sub": "rita@institution.example",
        "iat": now,
        "exp": now + 3600,
        "ga4gh_visa_v1": {
            "type": "ControlledAccessGrants",
            "value": "https://doi.org/10.1234/other-dataset",
            "source": "https://rems.example.org/organization/dac-1",
            "by": "dac",
            "asserted": now - 86400,
        },
    }
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": "rems-1"})


@SQLITE_ONLY
def test_visa_from_a_trusted_issuer_is_evidence(
    rems: ec.EllipticCurvePrivateKey, world: World
) -> None:
    api, rita = world.api, world.researcher
    body = {
        "project_id": world.project_id,
        "datasets": [world.node_a.dataset_id],
        "purpose": "more analyses",
        "ethics_reference": "EC-TEST-2",
        "intended_use": {"codes": ["HMB"]},
        "duration_days": 30,
    }
    application = api.post("/api/access/applications", json=body, headers=rita.headers).json()
    path = f"/api/access/applications/{application['id']}/visas"

    def attach(visa: str) -> Any:
        return api.post(path, json={"visa": visa}, headers=rita.headers)

    cases = {
        "not trusted": _rems_visa(rems, iss="https://elsewhere.example.org"),
        "does not verify": _rems_visa(_key()),  # same kid, another key
        "not valid now": _rems_visa(rems, exp=int(time.time()) - 600),
        "no ga4gh_visa_v1": _rems_visa(rems, ga4gh_visa_v1=None),
        "not accepted": jwt.encode(
            {"iss": REMS, "exp": int(time.time()) + 60}, "k" * 32, algorithm="HS256"
        ),
    }
    for reason, visa in cases.items():
        refused = attach(visa)
        assert refused.status_code == 422, (reason, refused.text)
        assert reason in refused.json()["detail"], (reason, refused.text)
    assert api.get(path, headers=rita.headers).json() == []

    visa = _rems_visa(rems)
    accepted = attach(visa)
    assert accepted.status_code == 201, accepted.text
    assert attach(visa).status_code == 409
    api.post(f"/api/access/applications/{application['id']}/submit", headers=rita.headers)
    # the DAC (here the hub administrator) sees the verified claims
    shown = api.get(path, headers=world.admin.headers).json()
    assert shown[0]["issuer"] == REMS and shown[0]["visa_type"] == "ControlledAccessGrants"
    assert shown[0]["value"] == "https://doi.org/10.1234/other-dataset"
    assert shown[0]["asserted_by"] == "dac" and shown[0]["subject"] == "rita@institution.example"
    # a submitted application takes no more evidence
    assert attach(_rems_visa(rems, jti="another")).status_code == 409
