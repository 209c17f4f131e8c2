"""Who may call what: tokens, node secrets, project membership and organization roles.

Route-wide checks walk every route of the running app, so a new route is covered the day
it is added.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.routing import APIRoute

from hubtools import PASSWORD, SQLITE_ONLY, TestClient, World, bearer, done, mean_output
from medfed.common.timeutil import utcnow
from medfed.hub.api.deps import (
    get_current_node,
    get_current_user,
    get_detached_node,
    get_detached_user,
    get_principal,
)
from medfed.hub.db.models import ApiToken, Run, User
from medfed.hub.web.session import PageRoute

pytestmark = SQLITE_ONLY  # these checks run before storage; tests/contract covers backends

EXEMPT = {
    "/api/health",
    "/api/auth/login",
    # single sign-on: the provider list and the device grant come before any token
    "/api/auth/sso/providers",
    "/api/auth/sso/{provider}/device",
    "/api/auth/sso/{provider}/device/token",
    # a second factor enrolled by password (an account the MFA policy refuses a token)
    "/api/auth/mfa/enrol",
    "/api/auth/mfa/confirm",
    # the keys that verify the hub's GA4GH visas: public, as any JWKS
    "/.well-known/jwks.json",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    # the public catalogue: anonymous callers see published datasets (a sent token is checked)
    "/api/catalogue",
    "/api/catalogue/{dataset_id}",
    "/api/datasets/{dataset_id}/dcat",
    "/api/datasets/{dataset_id}/datacite",
    "/pid/{pid}",
    "/pid/{prefix}/{suffix}",
}
BODY_METHODS = {"POST", "PUT", "PATCH"}


@dataclass(frozen=True)
class Endpoint:
    """One (method, path) of the app and every dependency its route resolves."""

    method: str
    path: str
    depends_on: frozenset[Any]

    @property
    def user_only(self) -> bool:
        return bool({get_current_user, get_detached_user} & self.depends_on)

    @property
    def node_only(self) -> bool:
        return bool({get_current_node, get_detached_node} & self.depends_on)


def _dependencies(dependant: Any) -> set[Any]:
    found: set[Any] = set()
    for sub in dependant.dependencies:
        if sub.call is not None:
            found.add(sub.call)
        found |= _dependencies(sub)
    return found


def endpoints(app: FastAPI) -> list[Endpoint]:
    """Every (method, path) of the API, HEAD left out.

    Web pages (``PageRoute``) are guarded by the session cookie instead of a bearer token;
    tests/web covers them.
    """
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before included routers were resolved lazily
        entries: list[Any] = list(app.routes)
    else:
        entries = list(iter_route_contexts(app.routes))
    found: dict[tuple[str, str], Endpoint] = {}
    for entry in entries:
        route = getattr(entry, "original_route", entry)
        if isinstance(route, PageRoute):
            continue
        depends_on = (
            frozenset(_dependencies(route.dependant))
            if isinstance(route, APIRoute)
            else frozenset()
        )
        for method in getattr(entry, "methods", None) or ():
            if method != "HEAD":
                found[method, entry.path] = Endpoint(method, entry.path, depends_on)
    return [found[key] for key in sorted(found)]


def guarded(app: FastAPI) -> list[Endpoint]:
    return [e for e in endpoints(app) if e.path not in EXEMPT]


def call(api: TestClient, endpoint: Endpoint, headers: dict[str, str]) -> Any:
    url = re.sub(r"\{[^}]+\}", "1", endpoint.path)
    body = {} if endpoint.method in BODY_METHODS else None
    return api.request(endpoint.method, url, json=body, headers=headers)


def test_route_listing_covers_every_documented_operation(hub_app: FastAPI) -> None:
    listed = {(e.method, e.path) for e in endpoints(hub_app)}
    documented = {
        (method.upper(), path)
        for path, operations in hub_app.openapi()["paths"].items()
        for method in operations
    }
    assert documented <= listed
    assert len(guarded(hub_app)) >= 20


def test_every_guarded_route_depends_on_a_principal(hub_app: FastAPI) -> None:
    for endpoint in guarded(hub_app):
        # the poll, the answer and a task's wait check the bearer without a request
        # session, the same way
        assert {get_principal, get_detached_node, get_detached_user} & endpoint.depends_on, endpoint
    assert sum(e.user_only for e in guarded(hub_app)) >= 15
    assert sum(e.node_only for e in guarded(hub_app)) >= 4


def test_exempt_routes_answer_without_a_token(world: World) -> None:
    api = world.api
    assert api.get("/api/health").json()["status"] == "ok"
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert api.get(path).status_code == 200, path
    login = api.post("/api/auth/login", json={"username": "rita", "password": PASSWORD})
    assert login.status_code == 201


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic cml0YTpwYXNzd29yZA=="},
        bearer("not-a-medfed-token"),
        bearer("mfu_" + secrets.token_urlsafe(32)),
        bearer("mfn_" + secrets.token_urlsafe(32)),
    ],
    ids=["none", "empty-bearer", "basic", "garbage", "unknown-user-token", "unknown-node-secret"],
)
def test_every_guarded_route_needs_a_valid_token(world: World, headers: dict[str, str]) -> None:
    before = {t: world.count(t) for t in ("tasks", "runs", "users", "api_tokens", "nodes")}
    for endpoint in guarded(world.app):
        response = call(world.api, endpoint, headers)
        assert response.status_code == 401, (endpoint, response.text)
        assert response.json()["detail"], endpoint
    assert {t: world.count(t) for t in before} == before


def test_node_secret_on_user_routes_is_forbidden(world: World) -> None:
    user_routes = [e for e in guarded(world.app) if e.user_only]
    assert user_routes
    for endpoint in user_routes:
        response = call(world.api, endpoint, world.node_a.headers)
        assert response.status_code == 403, (endpoint, response.text)
        assert "node credentials" in response.json()["detail"]


def test_user_token_on_node_routes_is_forbidden(world: World) -> None:
    task = world.create_task()
    node_routes = [e for e in guarded(world.app) if e.node_only]
    assert len(node_routes) >= 4
    for person in (world.researcher, world.admin):
        for endpoint in node_routes:
            response = call(world.api, endpoint, person.headers)
            assert response.status_code == 403, (endpoint, response.text)
            assert "user credentials" in response.json()["detail"]
    assert world.count("runs") == 2
    assert all(r["status"] == "pending" for r in world.task(task["id"])["runs"])


# ------------------------------------------------------------------------- projects


def test_researcher_outside_the_project_cannot_see_or_create_its_tasks(world: World) -> None:
    task = world.create_task()
    api, outsider, project = world.api, world.outsider.headers, world.project_id
    attempts = [
        api.get("/api/tasks", params={"project_id": project}, headers=outsider),
        api.get(f"/api/tasks/{task['id']}", headers=outsider),
        api.get(f"/api/tasks/{task['id']}/wait", params={"timeout": 0}, headers=outsider),
        # without progress the wait's first pass reads only the mark: the same check
        api.get(
            f"/api/tasks/{task['id']}/wait",
            params={"timeout": 0, "progress": "false"},
            headers=outsider,
        ),
        api.get(f"/api/projects/{project}", headers=outsider),
    ]
    for response in attempts:
        assert response.status_code == 403, response.request.url
        assert f"not a member of project {project}" in response.json()["detail"]

    tasks, runs = world.count("tasks"), world.count("runs")
    params = {"columns": ["age"]}
    body = {"project_id": project, "algorithm": "mean", "datasets": ["cohort"], "params": params}
    create = api.post("/api/tasks", json=body, headers=outsider)
    assert create.status_code == 403
    assert f"project {project}" in create.json()["detail"]
    assert (world.count("tasks"), world.count("runs")) == (tasks, runs)

    joined = api.post(
        f"/api/projects/{project}/members", json={"user_id": world.outsider.id}, headers=outsider
    )
    assert joined.status_code == 403
    assert api.get("/api/projects", headers=outsider).json() == []


def test_a_member_added_by_the_creator_then_sees_the_tasks(world: World) -> None:
    task = world.create_task()
    added = world.api.post(
        f"/api/projects/{world.project_id}/members",
        json={"user_id": world.outsider.id},
        headers=world.researcher.headers,
    )
    assert added.status_code == 200
    assert world.outsider.id in added.json()["members"]
    seen = world.api.get(f"/api/tasks/{task['id']}", headers=world.outsider.headers)
    assert seen.status_code == 200 and seen.json()["id"] == task["id"]


def test_unknown_project_and_task_are_404(world: World) -> None:
    headers = world.researcher.headers
    assert world.api.get("/api/tasks/999", headers=headers).status_code == 404
    for progress in ("true", "false"):  # the wait's two first passes refuse alike
        waited = world.api.get(
            "/api/tasks/999/wait", params={"timeout": 0, "progress": progress}, headers=headers
        )
        assert waited.status_code == 404 and waited.json()["detail"] == "task 999 not found"
    listing = world.api.get("/api/tasks", params={"project_id": 999}, headers=headers)
    assert listing.status_code == 404 and "999" in listing.json()["detail"]


# ---------------------------------------------------------------------------- nodes


def test_a_node_cannot_see_claim_or_answer_another_nodes_runs(world: World) -> None:
    world.create_task(datasets=["node-a/cohort"])
    assert world.claim(world.node_b) is None  # node-a's run is not node-b's to claim
    a = world.claim(world.node_a)
    assert a is not None
    lease_before = _run(world, a["run_id"]).lease_expires_at

    response = world.post_outcome(world.node_b, a["run_id"], done(a, mean_output(10, 1.0)))
    assert response.status_code == 404
    assert f"run {a['run_id']} not found" in response.json()["detail"]

    beat = world.api.post(
        "/api/node/heartbeat", json={"run_ids": [a["run_id"]]}, headers=world.node_b.headers
    )
    assert beat.json()["extended"] == [] and beat.json()["lost"] == [a["run_id"]]
    run = _run(world, a["run_id"])
    assert (run.status, run.lease_id, run.lease_expires_at) == (
        "claimed",
        a["lease_id"],
        lease_before,
    )

    world.create_task()
    b = world.claim(world.node_b)
    assert b is not None and b["dataset_id"] == world.node_b.dataset_id


def test_node_identity_is_its_own(world: World) -> None:
    for node in (world.node_a, world.node_b):
        me = world.api.get("/api/node/me", headers=node.headers).json()
        assert (me["id"], me["name"], me["organization_id"]) == (
            node.id,
            node.name,
            node.organization_id,
        )


def _run(world: World, run_id: int) -> Run:
    with world.app.state.sessionmaker() as session:
        run = session.get(Run, run_id)
        assert run is not None
        return run


# ----------------------------------------------------------------------------- tokens


def test_tokens_create_list_revoke(world: World) -> None:
    api, headers = world.api, world.researcher.headers
    created = api.post("/api/tokens", json={"name": "ci", "days": 7}, headers=headers)
    assert created.status_code == 201
    token = created.json()
    assert token["token"].startswith("mfu_") and token["prefix"] == token["token"][:10]
    lifetime = datetime.fromisoformat(token["expires_at"]) - datetime.fromisoformat(
        token["created_at"]
    )
    assert abs(lifetime - timedelta(days=7)) < timedelta(seconds=5)
    assert token["revoked_at"] is None
    me = api.get("/api/me", headers=bearer(token["token"]))
    assert me.json()["username"] == "rita"

    listed = api.get("/api/tokens", headers=headers).json()
    assert token["id"] in [t["id"] for t in listed]
    assert all("token" not in t for t in listed)  # the plain token is shown once only
    admin_ids = {t["id"] for t in api.get("/api/tokens", headers=world.admin.headers).json()}
    assert token["id"] not in admin_ids  # each user lists only their own

    revoked = api.delete(f"/api/tokens/{token['id']}", headers=headers)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    again = api.delete(f"/api/tokens/{token['id']}", headers=headers)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    listed = {t["id"]: t for t in api.get("/api/tokens", headers=headers).json()}
    assert listed[token["id"]]["revoked_at"] is not None
    assert api.get("/api/me", headers=headers).status_code == 200  # other tokens still work

    for days in (0, 367):
        bad = api.post("/api/tokens", json={"days": days}, headers=headers)
        assert bad.status_code == 422 and "days" in bad.json()["detail"]


def test_only_the_owner_or_the_hub_admin_revokes_a_token(world: World) -> None:
    token = world.api.post("/api/tokens", json={}, headers=world.researcher.headers).json()
    other = world.api.delete(f"/api/tokens/{token['id']}", headers=world.outsider.headers)
    assert other.status_code == 404
    assert world.api.get("/api/me", headers=bearer(token["token"])).status_code == 200
    admin = world.api.delete(f"/api/tokens/{token['id']}", headers=world.admin.headers)
    assert admin.status_code == 200
    assert world.api.get("/api/me", headers=bearer(token["token"])).status_code == 401


def test_revoked_token_is_401(world: World) -> None:
    token = world.api.post("/api/tokens", json={}, headers=world.researcher.headers).json()
    world.api.delete(f"/api/tokens/{token['id']}", headers=world.researcher.headers)
    response = world.api.get("/api/me", headers=bearer(token["token"]))
    assert response.status_code == 401
    assert response.json()["detail"] == "token revoked"


def test_expired_token_is_401(world: World) -> None:
    token = world.api.post("/api/tokens", json={}, headers=world.researcher.headers).json()
    with world.app.state.sessionmaker() as session:
        session.execute(
            sa.update(ApiToken)
            .where(ApiToken.id == token["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    response = world.api.get("/api/me", headers=bearer(token["token"]))
    assert response.status_code == 401
    assert response.json()["detail"] == "token expired"


def test_disabled_users_token_is_401(world: World) -> None:
    with world.app.state.sessionmaker() as session:
        session.execute(sa.update(User).where(User.id == world.outsider.id).values(active=False))
        session.commit()
    response = world.api.get("/api/me", headers=world.outsider.headers)
    assert response.status_code == 401
    login = world.api.post("/api/auth/login", json={"username": "otto", "password": PASSWORD})
    assert login.status_code == 401


# --------------------------------------------------------------- organizations & users


def test_org_admin_creates_users_and_nodes_only_in_its_own_org(world: World) -> None:
    api, bert = world.api, world.org_admin.headers
    user = {"username": "nina", "password": "nina-password", "roles": ["researcher"]}
    own = api.post("/api/users", json={**user, "organization_id": world.org_b}, headers=bert)
    assert own.status_code == 201 and own.json()["organization_id"] == world.org_b
    users = world.count("users")
    other = api.post(
        "/api/users",
        json={**user, "username": "nora", "organization_id": world.org_a},
        headers=bert,
    )
    assert other.status_code == 403
    assert f"organization {world.org_a}" in other.json()["detail"]
    assert world.count("users") == users

    node = api.post(
        "/api/nodes", json={"name": "node-b2", "organization_id": world.org_b}, headers=bert
    )
    assert node.status_code == 201 and node.json()["secret"].startswith("mfn_")
    nodes = world.count("nodes")
    foreign = api.post(
        "/api/nodes", json={"name": "node-a2", "organization_id": world.org_a}, headers=bert
    )
    assert foreign.status_code == 403
    assert f"organization {world.org_a}" in foreign.json()["detail"]
    assert world.count("nodes") == nodes

    listed = {u["username"] for u in api.get("/api/users", headers=bert).json()}
    assert listed == {"otto", "bert", "nina"}  # an org admin sees its own organization


def test_researcher_cannot_create_users_or_nodes(world: World) -> None:
    api, rita = world.api, world.researcher.headers
    body = {"username": "nils", "password": "nils-password", "organization_id": world.org_a}
    assert api.post("/api/users", json=body, headers=rita).status_code == 403
    node = {"name": "node-x", "organization_id": world.org_a}
    assert api.post("/api/nodes", json=node, headers=rita).status_code == 403


def test_only_the_hub_admin_creates_organizations(world: World) -> None:
    organizations = world.count("organizations")
    for person in (world.org_admin, world.researcher):
        response = world.api.post(
            "/api/organizations", json={"name": "Org C"}, headers=person.headers
        )
        assert response.status_code == 403
        assert "hub administrator" in response.json()["detail"]
    assert world.count("organizations") == organizations
    created = world.api.post(
        "/api/organizations", json={"name": "Org C"}, headers=world.admin.headers
    )
    assert created.status_code == 201 and created.json()["name"] == "Org C"


# ------------------------------------------------------------------------------ login


def test_login_with_a_wrong_password_or_unknown_user_is_401(world: World) -> None:
    tokens = world.count("api_tokens")
    wrong = world.api.post("/api/auth/login", json={"username": "rita", "password": "nope-nope"})
    unknown = world.api.post("/api/auth/login", json={"username": "nobody", "password": PASSWORD})
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.json()["detail"] == "wrong username or password"
    assert world.count("api_tokens") == tokens
    missing = world.api.post("/api/auth/login", json={"username": "rita"})
    assert missing.status_code == 422 and "password" in missing.json()["detail"]


def test_login_returns_a_working_token(world: World) -> None:
    response = world.api.post("/api/auth/login", json={"username": "rita", "password": PASSWORD})
    assert response.status_code == 201
    me = world.api.get("/api/me", headers=bearer(response.json()["token"]))
    assert me.json()["id"] == world.researcher.id
