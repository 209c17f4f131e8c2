"""The authorization matrix: every route of the hub by every kind of caller: expected status.

How it runs: :data:`ROUTES` has one row per (method, path) of the running app — API routes
and web pages alike — and :func:`test_every_route_has_a_row` fails for a route without one,
so a new route is pinned the day it is added. Each API row names the URL it calls (path
parameters filled from the world) and the body it sends; its expected status per principal
comes from its class (``user``: anonymous 401 and node 403; ``node``: anonymous 401 and
users 403; ``any``: either principal; ``open``: no token needed) with the row's exceptions
on top. Every row runs in its own copy of the world (:func:`test_route`), principals in
:data:`PRINCIPALS` order, so one row's writes never change another's answers; within a row
refusals come first and the allowed callers' answers are pinned in that order.

Principals (beside the world of ``hubtools``): ``member`` (rita, researcher of Org A who
made project P), ``outsider`` (otto, researcher of Org B), ``org_admin`` (bert, admin of
Org B — the organization admin of another organization for Org A's objects), ``steward``
(Org A), ``dac_b`` (DAC of Org B, which holds data project P is entitled to), ``dac_c``
(DAC of Org C, which holds nothing), ``auditor`` (Org A), ``superuser`` (the hub admin),
``node`` (node-a's secret). User tokens on node routes are the ``node`` class's column.

Web pages answer by session cookie: :data:`PAGES` pins what an anonymous visitor gets (the
public pages, or a redirect to the sign-in page); ``tests/web`` covers signed-in visitors.
"""

from __future__ import annotations

import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from hubdatabases import Templates, settings_for
from hubtools import COLUMNS, PASSWORD, SQLITE_ONLY, TestClient, World, bearer
from medfed.common.security import USER_TOKEN_PREFIX, digest
from medfed.common.timeutil import utcnow
from medfed.hub.app import create_app
from medfed.hub.db.models import ApiToken, Organization, User
from medfed.hub.db.models_access import AccessApplication
from medfed.hub.services import ledger
from medfed.hub.web.session import PageRoute

# authorization runs before storage (SQLite only; tests/contract covers the backends)

PRINCIPALS = (
    "anonymous",
    "node",
    "outsider",
    "org_admin",
    "dac_c",
    "auditor",
    "steward",
    "member",
    "dac_b",
    "superuser",
)
USERS = tuple(p for p in PRINCIPALS if p not in ("anonymous", "node"))


@dataclass
class Ctx:
    """The ids a row's URL and body are made of (one world copy each)."""

    world: World
    headers: dict[str, dict[str, str]]
    task_id: int
    run_id: int
    application_b: int  # approved (world), project P at Org B
    submitted_b: int  # submitted, waiting for Org B's DAC
    draft_app: int  # rita's draft application to Org B
    draft_b: int  # a draft dataset of node-b
    spare_token: int

    @property
    def project(self) -> int:
        return self.world.project_id

    @property
    def dataset_b(self) -> int:
        return self.world.node_b.dataset_id


Make = Callable[[Ctx], Any]


@dataclass(frozen=True)
class Row:
    """One route: its class, the URL and body it is called with, and its exceptions."""

    kind: str  # user | node | any | open
    url: Make | str
    body: Make | None = None
    allowed: int = 200  # the status of callers the class lets through (see EXPECT)
    upload: bool = False  # send a file (multipart) instead of a JSON body


def _defaults(row: Row) -> dict[str, int]:
    if row.kind == "open":
        return dict.fromkeys(PRINCIPALS, row.allowed)
    base = {"anonymous": 401}
    if row.kind == "user":
        base |= {"node": 403} | dict.fromkeys(USERS, row.allowed)
    elif row.kind == "node":
        base |= {"node": row.allowed} | dict.fromkeys(USERS, 403)
    else:
        base |= dict.fromkeys((*USERS, "node"), row.allowed)
    return base


def expected(method: str, path: str) -> dict[str, int]:
    return _defaults(ROUTES[method, path]) | EXPECT.get((method, path), {})


DENY_ALL_BUT_SUPER = {u: 403 for u in USERS if u != "superuser"}
TASK = {"algorithm": "mean", "datasets": ["cohort"], "params": {"columns": ["age"]}}

ROUTES: dict[tuple[str, str], Row] = {}

#: an anonymous visitor on each web page (ids filled with 1): the public pages answer, the
#: others redirect to the sign-in page (303), every form post without its CSRF token is 403;
#: dataset 1 is released, not published, so its page is 404 as for a missing one
SIGN_IN, NO_CSRF = 303, 403
PAGES: dict[tuple[str, str], int] = {
    ("GET", "/"): 200,
    ("GET", "/catalogue"): 200,
    ("GET", "/login"): 200,
    ("GET", "/datasets/{dataset_id}"): 404,
    # single sign-on with a provider the hub does not have
    ("GET", "/auth/sso/{provider}/start"): 404,
    ("GET", "/auth/sso/{provider}/callback"): 404,
    # the sign-in's second step without its pending cookie: "the sign-in has expired"
    ("GET", "/login/otp"): 401,
    ("GET", "/login/enrol"): 401,
    **{
        ("GET", path): SIGN_IN
        for path in (
            "/admin",
            "/applications",
            "/applications/new",
            "/applications/{application_id}",
            "/audit/queries",
            "/cohorts/{cohort_id}",
            "/cohorts/{cohort_id}/counts/{task_id}",
            "/cohorts/{cohort_id}/run-form",
            "/dac",
            "/models/{model_id}/download",
            "/projects",
            "/projects/{project_id}",
            "/projects/{project_id}/cohorts",
            "/projects/{project_id}/cohorts/new",
            "/projects/{project_id}/models",
            "/projects/{project_id}/run-form",
            "/tasks/{task_id}",
            "/tasks/{task_id}/plot.png",
            "/tasks/{task_id}/status",
            "/projects/{project_id}/validation",
            "/validation/{study_id}",
            "/validation/{study_id}/report.html",
        )
    },
    **{
        ("POST", path): NO_CSRF
        for path in (
            "/admin/datasets/{dataset_id}/lifecycle",
            "/admin/users",
            "/applications",
            "/applications/{application_id}/{step}",
            "/cohorts/{cohort_id}/counts",
            "/cohorts/{cohort_id}/tasks",
            "/dac/applications/{application_id}",
            "/datasets/{dataset_id}/describe",
            "/login",
            "/login/enrol",
            "/login/otp",
            "/logout",
            "/projects",
            "/projects/{project_id}/cohorts",
            "/projects/{project_id}/tasks",
        )
    },
}


def _app_body(c: Ctx) -> dict[str, Any]:
    return {
        "project_id": c.project,
        "datasets": [c.draft_b],
        "purpose": "p",
        "ethics_reference": "EC-1",
        "intended_use": {"codes": ["HMB"]},
        "duration_days": 30,
    }


def _ends(_: Ctx) -> dict[str, Any]:
    return {"ends_at": (utcnow() + timedelta(days=20)).isoformat()}


H0 = "0" * 64


def _new(prefix: str) -> str:
    """A fresh name, so that each allowed caller's create succeeds on its own."""
    return f"{prefix}-{secrets.token_hex(4)}"


#: the smallest Circe definition: everyone with a condition of concept 2000000100
COHORT: dict[str, Any] = {
    "ConceptSets": [
        {
            "id": 0,
            "name": "breast cancer",
            "expression": {"items": [{"concept": {"CONCEPT_ID": 2000000100}}]},
        }
    ],
    "PrimaryCriteria": {
        "CriteriaList": [{"ConditionOccurrence": {"CodesetId": 0}}],
        "ObservationWindow": {"PriorDays": 0, "PostDays": 0},
    },
}


def _cohort(c: Ctx) -> int:
    """A cohort of project P, saved by its member rita."""
    body = {"project_id": c.project, "name": _new("cohort"), "definition": COHORT}
    made = c.world.api.post("/api/cohorts", json=body, headers=c.headers["member"])
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


_u = Row  # short alias for the table below


ROUTES.update(
    {
        # ------------------------------------------ second factor (TOTP) and GA4GH visas
        # by password: a pending enrolment for rita; confirming with none pending is 404
        ("POST", "/api/auth/mfa/enrol"): _u(
            "open", "/api/auth/mfa/enrol", lambda c: {"username": "rita", "password": PASSWORD}, 201
        ),
        ("POST", "/api/auth/mfa/confirm"): _u(
            "open",
            "/api/auth/mfa/confirm",
            lambda c: {"username": "rita", "password": PASSWORD, "code": "000000"},
            404,
        ),
        ("GET", "/api/me/mfa"): _u("user", "/api/me/mfa"),
        ("POST", "/api/me/mfa/enrol"): _u("user", "/api/me/mfa/enrol", allowed=201),
        ("POST", "/api/me/mfa/confirm"): _u(
            "user", "/api/me/mfa/confirm", lambda c: {"otp": "000000"}, 404
        ),
        ("POST", "/api/me/mfa/disable"): _u(
            "user", "/api/me/mfa/disable", lambda c: {"otp": "000000"}, 404
        ),
        ("POST", "/api/me/mfa/recovery-codes"): _u(
            "user", "/api/me/mfa/recovery-codes", lambda c: {"otp": "000000"}, 409
        ),
        ("DELETE", "/api/users/{user_id}/mfa"): _u(
            "user", lambda c: f"/api/users/{c.world.researcher.id}/mfa", allowed=403
        ),
        ("GET", "/.well-known/jwks.json"): _u("open", "/.well-known/jwks.json"),
        ("GET", "/ga4gh/passport/v1/visas"): _u("user", "/ga4gh/passport/v1/visas"),
        ("GET", "/ga4gh/passport/v1"): _u("user", "/ga4gh/passport/v1"),
        ("POST", "/api/access/applications/{application_id}/visas"): _u(
            "user",
            lambda c: f"/api/access/applications/{c.draft_app}/visas",
            lambda c: {"visa": "not-a-visa-at-all"},
            404,
        ),
        ("GET", "/api/access/applications/{application_id}/visas"): _u(
            "user", lambda c: f"/api/access/applications/{c.draft_app}/visas", allowed=404
        ),
        # --------------------------------------------------- saved cohorts (project P's)
        ("POST", "/api/cohorts"): _u(
            "user",
            "/api/cohorts",
            lambda c: {"project_id": c.project, "name": _new("cohort"), "definition": COHORT},
            403,
        ),
        ("GET", "/api/projects/{project_id}/cohorts"): _u(
            "user", lambda c: f"/api/projects/{c.project}/cohorts", allowed=403
        ),
        ("GET", "/api/cohorts/{cohort_id}"): _u(
            "user", lambda c: f"/api/cohorts/{_cohort(c)}", allowed=404
        ),
        # ------------------------- model validation (project P's; no model file uploaded)
        ("POST", "/api/validation/models"): _u(
            "user",
            "/api/validation/models",
            lambda c: {
                "project_id": c.project,
                "name": "m",
                "sha256": H0,
                "features": ["age"],
                "output": {"name": "probabilities"},
            },
            403,
        ),
        ("GET", "/api/projects/{project_id}/validation/models"): _u(
            "user", lambda c: f"/api/projects/{c.project}/validation/models", allowed=403
        ),
        ("GET", "/api/validation/models/{model_id}"): _u(
            "user", "/api/validation/models/999999", allowed=404
        ),
        ("POST", "/api/validation/studies"): _u(
            "user",
            "/api/validation/studies",
            lambda c: {
                "project_id": c.project,
                "name": "s",
                "model_id": 999999,
                "datasets": ["cohort"],
                "outcome": {"column": "age", "value": 50},
            },
            404,  # no such model, whoever asks (a model of another project is as unseen)
        ),
        ("GET", "/api/validation/studies/{study_id}"): _u(
            "user", "/api/validation/studies/999999", allowed=404
        ),
        ("GET", "/api/projects/{project_id}/validation/studies"): _u(
            "user", lambda c: f"/api/projects/{c.project}/validation/studies", allowed=403
        ),
        # a study's recalibrated model: whoever reads the study (no such study: 404)
        ("POST", "/api/validation/studies/{study_id}/recalibrated-model"): _u(
            "user", "/api/validation/studies/999999/recalibrated-model", allowed=404
        ),
        # a node fetches a model only for its own run of a validation of that model
        ("GET", "/api/node/validation/models/{sha256}"): _u(
            "node", lambda c: f"/api/node/validation/models/{H0}?run_id={c.run_id}", allowed=404
        ),
        # ------------------------------------------------------------ tokens, me, users
        ("GET", "/api/me"): _u("user", "/api/me"),
        ("GET", "/api/tokens"): _u("user", "/api/tokens"),
        ("POST", "/api/tokens"): _u("user", "/api/tokens", lambda c: {}, 201),
        ("DELETE", "/api/tokens/{token_id}"): _u(
            "user", lambda c: f"/api/tokens/{c.spare_token}", allowed=404
        ),
        ("GET", "/api/users"): _u("user", "/api/users"),
        ("POST", "/api/users"): _u(
            "user",
            "/api/users",
            lambda c: {
                "username": _new("user"),
                "password": "long-enough-pass",
                "organization_id": c.world.org_b,
                "roles": ["researcher"],
            },
            403,
        ),
        ("GET", "/api/organizations"): _u("user", "/api/organizations"),
        ("POST", "/api/organizations"): _u(
            "user", "/api/organizations", lambda c: {"name": _new("Org")}, 403
        ),
        ("GET", "/api/nodes"): _u("user", "/api/nodes"),
        ("POST", "/api/nodes"): _u(
            "user",
            "/api/nodes",
            lambda c: {"name": _new("node"), "organization_id": c.world.org_b},
            403,
        ),
        # -------------------------------------------------------------------- projects
        ("GET", "/api/projects"): _u("user", "/api/projects"),
        ("POST", "/api/projects"): _u("user", "/api/projects", lambda c: {"name": _new("P")}, 201),
        ("GET", "/api/projects/{project_id}"): _u(
            "user", lambda c: f"/api/projects/{c.project}", allowed=403
        ),
        ("POST", "/api/projects/{project_id}/members"): _u(
            "user",
            lambda c: f"/api/projects/{c.project}/members",
            lambda c: {"user_id": c.world.outsider.id},
            403,
        ),
        ("GET", "/api/projects/{project_id}/privacy-budget"): _u(
            "user", lambda c: f"/api/projects/{c.project}/privacy-budget", allowed=403
        ),
        ("PUT", "/api/projects/{project_id}/privacy-budget"): _u(
            "user",
            lambda c: f"/api/projects/{c.project}/privacy-budget",
            lambda c: {"epsilon": 1000.0, "delta": 1e-5},
            403,
        ),
        ("GET", "/api/access/projects/{project_id}/query-budget"): _u(
            "user", lambda c: f"/api/access/projects/{c.project}/query-budget", allowed=403
        ),
        ("PUT", "/api/access/projects/{project_id}/query-budget"): _u(
            "user",
            lambda c: f"/api/access/projects/{c.project}/query-budget",
            lambda c: {"query_budget": 1000, "window_hours": 24},
            403,
        ),
        # ----------------------------------------------------------------------- tasks
        ("GET", "/api/tasks"): _u(
            "user", lambda c: f"/api/tasks?project_id={c.project}", allowed=403
        ),
        ("POST", "/api/tasks"): _u(
            "user", "/api/tasks", lambda c: {"project_id": c.project, **TASK}, 403
        ),
        ("GET", "/api/tasks/{task_id}"): _u(
            "user", lambda c: f"/api/tasks/{c.task_id}", allowed=403
        ),
        ("GET", "/api/tasks/{task_id}/runs"): _u(
            "user", lambda c: f"/api/tasks/{c.task_id}/runs", allowed=403
        ),
        ("GET", "/api/tasks/{task_id}/wait"): _u(
            "user", lambda c: f"/api/tasks/{c.task_id}/wait?timeout=0", allowed=403
        ),
        ("GET", "/api/trainings/{task_id}"): _u(
            "user", lambda c: f"/api/trainings/{c.task_id}", allowed=403
        ),
        ("POST", "/api/trainings"): _u("user", "/api/trainings", lambda c: {}, 422),
        ("GET", "/api/plans"): _u("user", "/api/plans"),
        ("POST", "/api/plans"): _u("user", "/api/plans", lambda c: {}, 422),
        ("GET", "/api/plans/{plan_hash}"): _u("user", f"/api/plans/{H0}", allowed=404),
        ("GET", "/api/models"): _u(
            "user", lambda c: f"/api/models?project_id={c.project}", allowed=403
        ),
        ("GET", "/api/models/{model_id}"): _u("user", "/api/models/1", allowed=404),
        ("GET", "/api/models/{model_id}/download"): _u(
            "user", "/api/models/1/download", allowed=404
        ),
        ("PUT", "/api/blobs"): _u("user", "/api/blobs", allowed=422),
        ("POST", "/api/discovery/count"): _u("user", "/api/discovery/count", lambda c: {}, 422),
        ("GET", "/api/discovery/queries/{query_id}"): _u(
            "user", "/api/discovery/queries/1", allowed=404
        ),
        ("GET", "/api/audit/queries"): _u("user", "/api/audit/queries", allowed=403),
        # -------------------------------------------------------------------- datasets
        ("GET", "/api/datasets"): _u("user", "/api/datasets"),
        ("GET", "/api/datasets/{dataset_id}"): _u(
            "user", lambda c: f"/api/datasets/{c.draft_b}", allowed=404
        ),
        ("GET", "/api/datasets/{dataset_id}/versions"): _u(
            "user", lambda c: f"/api/datasets/{c.draft_b}/versions", allowed=404
        ),
        ("GET", "/api/datasets/{dataset_id}/zenodo"): _u(
            "user", lambda c: f"/api/datasets/{c.dataset_b}/zenodo", allowed=404
        ),
        ("PATCH", "/api/datasets/{dataset_id}/metadata"): _u(
            "user",
            lambda c: f"/api/datasets/{c.draft_b}/metadata",
            lambda c: {"title": "T"},
            404,
        ),
        ("POST", "/api/datasets/{dataset_id}/release"): _u(
            "user", lambda c: f"/api/datasets/{c.draft_b}/release", allowed=404
        ),
        ("POST", "/api/datasets/{dataset_id}/publish"): _u(
            "user", lambda c: f"/api/datasets/{c.dataset_b}/publish", allowed=404
        ),
        ("POST", "/api/datasets/{dataset_id}/invalidate"): _u(
            "user",
            lambda c: f"/api/datasets/{c.dataset_b}/invalidate",
            lambda c: {"reason": "consent withdrawn"},
            404,
        ),
        ("POST", "/api/datasets/{dataset_id}/reactivate"): _u(
            "user", lambda c: f"/api/datasets/{c.dataset_b}/reactivate", allowed=404
        ),
        ("GET", "/api/organizations/{organization_id}/zenodo"): _u(
            "user", lambda c: f"/api/organizations/{c.world.org_b}/zenodo", allowed=403
        ),
        ("PUT", "/api/organizations/{organization_id}/zenodo"): _u(
            "user",
            lambda c: f"/api/organizations/{c.world.org_b}/zenodo",
            lambda c: {"url": "https://zenodo.org", "token": "zenodo-token"},
            403,
        ),
        # ---------------------------------------------------------------------- access
        ("GET", "/api/access/applications"): _u("user", "/api/access/applications"),
        ("POST", "/api/access/applications"): _u(
            "user", "/api/access/applications", _app_body, 403
        ),
        ("GET", "/api/access/applications/{application_id}"): _u(
            "user", lambda c: f"/api/access/applications/{c.application_b}", allowed=404
        ),
        ("PATCH", "/api/access/applications/{application_id}"): _u(
            "user",
            lambda c: f"/api/access/applications/{c.draft_app}",
            lambda c: {"title": "T"},
            404,
        ),
        ("POST", "/api/access/applications/{application_id}/submit"): _u(
            "user", lambda c: f"/api/access/applications/{c.draft_app}/submit", allowed=404
        ),
        ("POST", "/api/access/applications/{application_id}/approve"): _u(
            "user",
            lambda c: f"/api/access/applications/{c.submitted_b}/approve",
            _ends,
            404,
        ),
        ("POST", "/api/access/applications/{application_id}/{decision}"): _u(
            "user",
            lambda c: f"/api/access/applications/{c.submitted_b}/reject",
            lambda c: {"comment": "no"},
            404,
        ),
        ("POST", "/api/access/applications/{application_id}/ethics-file"): _u(
            "user",
            lambda c: f"/api/access/applications/{c.draft_app}/ethics-file",
            allowed=404,
            upload=True,
        ),
        ("GET", "/api/access/due"): _u("user", "/api/access/due"),
        ("GET", "/api/access/entitlements"): _u("user", "/api/access/entitlements"),
        # ---------------------------------------------------------------- node routes
        ("GET", "/api/node/me"): _u("node", "/api/node/me"),
        ("GET", "/api/node/runs/next"): _u("node", "/api/node/runs/next?wait=0", allowed=204),
        ("POST", "/api/node/heartbeat"): _u(
            "node", "/api/node/heartbeat", lambda c: {"run_ids": [c.run_id]}
        ),
        ("POST", "/api/node/runs/{run_id}/outcome"): _u(
            "node", lambda c: f"/api/node/runs/{c.run_id}/outcome", lambda c: {}, 422
        ),
        ("POST", "/api/node/runs/{run_id}/airlock"): _u(
            "node", lambda c: f"/api/node/runs/{c.run_id}/airlock", lambda c: {}, 422
        ),
        ("PUT", "/api/node/runs/{run_id}/blob"): _u(
            "node", lambda c: f"/api/node/runs/{c.run_id}/blob", allowed=422
        ),
        ("GET", "/api/node/blobs/{sha256}"): _u("node", f"/api/node/blobs/{H0}", allowed=404),
        ("POST", "/api/node/datasets"): _u("node", "/api/node/datasets", lambda c: {}, 422),
        ("POST", "/api/node/ledger/key"): _u("node", "/api/node/ledger/key", lambda c: {}, 422),
        ("POST", "/api/node/ledger/cosign"): _u(
            "node", "/api/node/ledger/cosign", lambda c: {}, 422
        ),
        ("POST", "/api/node/ledger/fact"): _u("node", "/api/node/ledger/fact", lambda c: {}, 422),
        ("GET", "/api/node/plans"): _u("node", "/api/node/plans"),
        ("GET", "/api/node/plans/{plan_hash}"): _u("node", f"/api/node/plans/{H0}", allowed=404),
        # --------------------------------------------------------- ledger (either side)
        ("GET", "/api/ledger/keys"): _u("any", "/api/ledger/keys"),
        ("GET", "/api/ledger/checkpoint"): _u("any", "/api/ledger/checkpoint"),
        ("GET", "/api/ledger/checkpoints"): _u("any", "/api/ledger/checkpoints"),
        ("GET", "/api/ledger/entries"): _u("any", "/api/ledger/entries"),
        ("GET", "/api/ledger/proof/inclusion"): _u(
            "any", "/api/ledger/proof/inclusion?index=0&size=1"
        ),
        ("GET", "/api/ledger/proof/consistency"): _u(
            "any", "/api/ledger/proof/consistency?first=1&second=2"
        ),
        # ------------------------------------------------------ public (no token needed)
        ("GET", "/api/health"): _u("open", "/api/health"),
        ("POST", "/api/auth/login"): _u(
            "open", "/api/auth/login", lambda c: {"username": "rita", "password": PASSWORD}, 201
        ),
        # single sign-on (the world's hub has no provider: a named one is 404)
        ("GET", "/api/auth/sso/providers"): _u("open", "/api/auth/sso/providers"),
        ("POST", "/api/auth/sso/{provider}/device"): _u(
            "open", "/api/auth/sso/none/device", allowed=404
        ),
        ("POST", "/api/auth/sso/{provider}/device/token"): _u(
            "open", "/api/auth/sso/none/device/token", lambda c: {"device_code": "x"}, 404
        ),
        ("GET", "/openapi.json"): _u("open", "/openapi.json"),
        ("GET", "/docs"): _u("open", "/docs"),
        ("GET", "/docs/oauth2-redirect"): _u("open", "/docs/oauth2-redirect"),
        ("GET", "/redoc"): _u("open", "/redoc"),
        ("GET", "/api/catalogue"): _u("open", "/api/catalogue"),
        ("GET", "/api/catalogue/{dataset_id}"): _u(
            "open", lambda c: f"/api/catalogue/{c.dataset_b}", allowed=404
        ),
        ("GET", "/api/datasets/{dataset_id}/dcat"): _u(
            "open", lambda c: f"/api/datasets/{c.dataset_b}/dcat", allowed=404
        ),
        ("GET", "/api/datasets/{dataset_id}/datacite"): _u(
            "open", lambda c: f"/api/datasets/{c.dataset_b}/datacite", allowed=404
        ),
        ("GET", "/pid/{pid}"): _u(
            "open", lambda c: f"/pid/mfd.{c.dataset_b}?format=json", allowed=404
        ),
        ("GET", "/pid/{prefix}/{suffix}"): _u(
            "open", "/pid/10.5281/zenodo.1?format=json", allowed=404
        ),
    }
)


#: the exceptions to each row's class defaults, in PRINCIPALS order (a state change by an
#: earlier caller shows as 409 for a later one)
EXPECT: dict[tuple[str, str], dict[str, int]] = {
    # project P's validation models and studies: its member and the hub admin (the model
    # file named was never uploaded: 404)
    ("POST", "/api/validation/models"): {"member": 404, "superuser": 404},
    ("GET", "/api/projects/{project_id}/validation/models"): {"member": 200, "superuser": 200},
    ("GET", "/api/projects/{project_id}/validation/studies"): {"member": 200, "superuser": 200},
    # project P's cohorts: its member and the hub admin
    ("POST", "/api/cohorts"): {"member": 201, "superuser": 201},
    ("GET", "/api/projects/{project_id}/cohorts"): {"member": 200, "superuser": 200},
    ("GET", "/api/cohorts/{cohort_id}"): {"member": 200, "superuser": 200},
    # an org admin resets a user's second factor (rita has none: 404); the draft's visas are
    # its project's (rita) and the hub admin's to see ("not-a-visa…" does not parse: 422)
    ("DELETE", "/api/users/{user_id}/mfa"): {"superuser": 404},
    ("POST", "/api/access/applications/{application_id}/visas"): {"member": 422, "superuser": 422},
    ("GET", "/api/access/applications/{application_id}/visas"): {"member": 200, "superuser": 200},
    ("DELETE", "/api/tokens/{token_id}"): {"member": 200, "superuser": 200},
    ("GET", "/api/access/applications/{application_id}"): {
        "member": 200,
        "dac_b": 200,
        "superuser": 200,
    },
    ("GET", "/api/access/due"): {
        "outsider": 403,
        "org_admin": 403,
        "auditor": 403,
        "steward": 403,
        "member": 403,
    },
    ("GET", "/api/access/projects/{project_id}/query-budget"): {
        "member": 200,
        "dac_b": 200,
        "superuser": 200,
    },
    ("GET", "/api/audit/queries"): {"steward": 200, "superuser": 200},
    ("GET", "/api/catalogue"): {"node": 403},
    ("GET", "/api/catalogue/{dataset_id}"): {
        "node": 403,
        "org_admin": 200,
        "member": 200,
        "superuser": 200,
    },
    ("GET", "/api/datasets/{dataset_id}"): {"org_admin": 200, "superuser": 200},
    ("GET", "/api/datasets/{dataset_id}/datacite"): {
        "node": 403,
        "org_admin": 200,
        "member": 200,
        "superuser": 200,
    },
    ("GET", "/api/datasets/{dataset_id}/dcat"): {
        "node": 403,
        "org_admin": 200,
        "member": 200,
        "superuser": 200,
    },
    ("GET", "/api/datasets/{dataset_id}/versions"): {"org_admin": 200, "superuser": 200},
    ("GET", "/api/datasets/{dataset_id}/zenodo"): {
        "org_admin": 200,
        "member": 403,
        "superuser": 200,
    },
    ("GET", "/api/models"): {"member": 200, "superuser": 200},
    ("GET", "/api/organizations/{organization_id}/zenodo"): {"org_admin": 200, "superuser": 200},
    ("GET", "/api/projects/{project_id}"): {"member": 200, "superuser": 200},
    ("GET", "/api/projects/{project_id}/privacy-budget"): {"member": 404, "superuser": 404},
    ("GET", "/api/tasks"): {"member": 200, "superuser": 200},
    ("GET", "/api/tasks/{task_id}"): {"member": 200, "superuser": 200},
    ("GET", "/api/tasks/{task_id}/runs"): {"superuser": 200},
    ("GET", "/api/tasks/{task_id}/wait"): {"member": 200, "superuser": 200},
    ("GET", "/api/trainings/{task_id}"): {"member": 422, "superuser": 422},
    # a released, unpublished version: 404 like a missing pid for those who may not see it
    ("GET", "/pid/{pid}"): {"node": 403, "org_admin": 200, "member": 200, "superuser": 200},
    ("GET", "/pid/{prefix}/{suffix}"): {"node": 403},
    ("PATCH", "/api/access/applications/{application_id}"): {"member": 200, "superuser": 200},
    ("PATCH", "/api/datasets/{dataset_id}/metadata"): {"org_admin": 200, "superuser": 200},
    # a draft of Org B: 404 for the applicant (as if missing), never naming the holder
    ("POST", "/api/access/applications"): {"member": 404, "superuser": 201},
    ("POST", "/api/access/applications/{application_id}/approve"): {
        "member": 403,
        "dac_b": 200,
        "superuser": 409,
    },
    ("POST", "/api/access/applications/{application_id}/ethics-file"): {
        "member": 200,
        "superuser": 200,
    },
    ("POST", "/api/access/applications/{application_id}/submit"): {
        "member": 200,
        "dac_b": 409,
        "superuser": 409,
    },
    ("POST", "/api/access/applications/{application_id}/{decision}"): {
        "member": 403,
        "dac_b": 200,
        "superuser": 409,
    },
    ("POST", "/api/datasets/{dataset_id}/invalidate"): {
        "org_admin": 200,
        "member": 403,
        "superuser": 409,
    },
    ("POST", "/api/datasets/{dataset_id}/publish"): {
        "org_admin": 200,
        "dac_c": 403,
        "auditor": 403,
        "steward": 403,
        "member": 403,
        "dac_b": 403,
        "superuser": 409,
    },
    ("POST", "/api/datasets/{dataset_id}/reactivate"): {
        "org_admin": 409,
        "member": 403,
        "superuser": 409,
    },
    ("POST", "/api/datasets/{dataset_id}/release"): {"org_admin": 200, "superuser": 409},
    ("POST", "/api/discovery/count"): {
        "outsider": 201,
        "org_admin": 201,
        "dac_c": 201,
        "auditor": 201,
        "steward": 201,
        "member": 201,
        "dac_b": 201,
        "superuser": 201,
    },
    ("POST", "/api/nodes"): {"org_admin": 201, "superuser": 201},
    ("POST", "/api/organizations"): {"superuser": 201},
    ("POST", "/api/projects"): {"dac_c": 403, "auditor": 403, "steward": 403, "dac_b": 403},
    ("POST", "/api/projects/{project_id}/members"): {"member": 200, "superuser": 200},
    ("POST", "/api/tasks"): {"member": 201, "superuser": 201},
    ("POST", "/api/users"): {"org_admin": 201, "superuser": 201},
    # the DAC of an organization the project applied to
    ("PUT", "/api/access/projects/{project_id}/query-budget"): {"dac_b": 200, "superuser": 200},
    ("PUT", "/api/organizations/{organization_id}/zenodo"): {"org_admin": 200, "superuser": 200},
    # issue 14: any DAC or admin set any project"s ε; now only the DAC of the entitled data
    ("PUT", "/api/projects/{project_id}/privacy-budget"): {"dac_b": 200, "superuser": 200},
}


# ---------------------------------------------------------------------------- harness


def _user(session: sa.orm.Session, name: str, org: int, roles: list[str]) -> str:
    user = User(username=name, password_hash="!", organization_id=org, roles=roles)
    session.add(user)
    session.flush()
    return _token(session, user.id)


def _token(session: sa.orm.Session, user_id: int) -> str:
    plain = USER_TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            user_id=user_id,
            name="matrix",
            token_hash=digest(plain),
            prefix=plain[:10],
            expires_at=utcnow() + timedelta(days=1),
        )
    )
    session.flush()
    return plain


def context(world: World) -> Ctx:
    """The extra principals and objects every row may use (in this test's world copy)."""
    with world.app.state.sessionmaker() as session:
        org_c = Organization(name="Org C")
        session.add(org_c)
        session.flush()
        tokens = {
            "steward": _user(session, "stella", world.org_a, ["steward"]),
            "dac_b": _user(session, "dana", world.org_b, ["dac"]),
            "dac_c": _user(session, "carl", org_c.id, ["dac"]),
            "auditor": _user(session, "aude", world.org_a, ["auditor"]),
        }
        spare = _token(session, world.researcher.id)
        spare_id = session.scalar(
            sa.select(ApiToken.id).where(ApiToken.token_hash == digest(spare))
        )
        application_b = session.scalar(
            sa.select(AccessApplication.id).where(AccessApplication.organization_id == world.org_b)
        )
        session.commit()
    headers = {name: bearer(token) for name, token in tokens.items()} | {
        "anonymous": {},
        "node": world.node_a.headers,
        "outsider": world.outsider.headers,
        "org_admin": world.org_admin.headers,
        "member": world.researcher.headers,
        "superuser": world.admin.headers,
    }
    with world.app.state.sessionmaker() as session:  # a checkpoint exists, whatever the clock
        ledger.make_checkpoint(session, key=world.app.state.ledger_key)
        session.commit()
    draft = world.api.post(
        "/api/node/datasets",
        json={"name": "draft-b", "columns": COLUMNS, "row_count": 10},
        headers=world.node_b.headers,
    )
    assert draft.status_code == 200, draft.text
    submitted_b = _apply(world, submit=True)
    draft_app = _apply(world, submit=False)
    task = world.create_task(datasets=["node-a/cohort"])
    run = world.claim(world.node_a)
    assert run is not None and application_b is not None and spare_id is not None
    return Ctx(
        world=world,
        headers=headers,
        task_id=task["id"],
        run_id=run["run_id"],
        application_b=application_b,
        submitted_b=submitted_b,
        draft_app=draft_app,
        draft_b=draft.json()["id"],
        spare_token=spare_id,
    )


def _apply(world: World, *, submit: bool) -> int:
    body = {
        "project_id": world.project_id,
        "datasets": [world.node_b.dataset_id],
        "purpose": "more analyses",
        "ethics_reference": "EC-2",
        "intended_use": {"codes": ["HMB"]},
        "duration_days": 30,
    }
    made = world.api.post("/api/access/applications", json=body, headers=world.researcher.headers)
    assert made.status_code == 201, made.text
    if submit:
        path = f"/api/access/applications/{made.json()['id']}/submit"
        assert world.api.post(path, headers=world.researcher.headers).status_code == 200
    return int(made.json()["id"])


def observe(ctx: Ctx, method: str, row: Row) -> dict[str, int]:
    url = row.url(ctx) if callable(row.url) else row.url
    seen: dict[str, int] = {}
    for principal in PRINCIPALS:
        body = row.body(ctx) if row.body is not None else None
        files = {"file": ("ethics.pdf", b"%PDF-1.4 approval", "application/pdf")}
        response = ctx.world.api.request(
            method,
            url,
            json=body,
            files=files if row.upload else None,
            headers=ctx.headers[principal],
        )
        seen[principal] = response.status_code
    return seen


def app_routes(app: FastAPI) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(API routes, page routes) of the running app, as (method, path), HEAD left out."""
    from fastapi.routing import iter_route_contexts

    api: set[tuple[str, str]] = set()
    pages: set[tuple[str, str]] = set()
    for entry in iter_route_contexts(app.routes):
        route = getattr(entry, "original_route", entry)
        for method in getattr(entry, "methods", None) or ():
            if method != "HEAD":
                (pages if isinstance(route, PageRoute) else api).add((method, entry.path))
    return api, pages


@SQLITE_ONLY
def test_every_route_has_a_row(hub_app: FastAPI) -> None:
    api, pages = app_routes(hub_app)
    assert sorted(api - ROUTES.keys()) == [], "routes without a row in ROUTES"
    assert sorted(ROUTES.keys() - api) == [], "rows for routes that no longer exist"
    assert sorted(pages ^ PAGES.keys()) == [], "pages without a row in PAGES (or stale rows)"


@pytest.fixture(scope="module")
def snapshot(
    tmp_path_factory: pytest.TempPathFactory, world_templates: Templates
) -> tuple[Path, dict[str, Any]]:
    """The world with the context of :func:`context` built once: its hub folder and ids.

    Every test then starts from a copy of it (the routes change what they touch), as the
    ``world`` fixture does with the bare world; building the context for each of the
    ~120 rows took three quarters of this file's time. Leases last a day here, so a run
    claimed in the snapshot is still claimed whenever a copy is made.
    """
    template = world_templates.get("sqlite")
    root = tmp_path_factory.mktemp("matrix")
    _copy_database(Path(template.location), root / "hub.db")
    app = create_app(
        settings_for(f"sqlite:///{root / 'hub.db'}", root / "hub", lease_seconds=86400)
    )
    try:
        with TestClient(app) as api:
            made = context(World(app=app, api=api, **template.seed))
    finally:
        app.state.engine.dispose()
    ids = {f.name: getattr(made, f.name) for f in fields(Ctx) if f.name != "world"}
    return root, ids


def _copy_database(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    if Path(f"{source}-wal").exists():  # normally folded in on close
        shutil.copyfile(f"{source}-wal", f"{target}-wal")


@pytest.fixture
def ctx(
    snapshot: tuple[Path, dict[str, Any]], tmp_path: Path, world_templates: Templates
) -> Iterator[Ctx]:
    """A copy of the snapshot with its own app and client, for one row."""
    root, ids = snapshot
    _copy_database(root / "hub.db", tmp_path / "hub.db")
    if (root / "hub").exists():
        shutil.copytree(root / "hub", tmp_path / "hub")
    app = create_app(settings_for(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path / "hub"))
    try:
        with TestClient(app) as api:
            seed = world_templates.get("sqlite").seed
            yield Ctx(world=World(app=app, api=api, **seed), **ids)
    finally:
        app.state.engine.dispose()


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES), ids=lambda v: str(v))
def test_route(ctx: Ctx, method: str, path: str) -> None:
    row = ROUTES[method, path]
    seen = observe(ctx, method, row)
    assert seen == expected(method, path)


@SQLITE_ONLY
def test_pages_for_an_anonymous_visitor(world: World) -> None:
    seen = {}
    for method, path in PAGES:
        url = re.sub(r"\{[^}]+\}", "1", path)
        response = world.api.request(method, url, follow_redirects=False)
        seen[method, path] = response.status_code
        if response.status_code == SIGN_IN:
            assert response.headers["location"] == f"/login?next={url}"
    assert seen == PAGES
