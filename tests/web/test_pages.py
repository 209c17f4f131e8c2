"""The web pages against the real app and database (TestClient): sessions, CSRF, forms.

Each test starts from the world of :mod:`hubtools` (Org A with the hub admin, researcher
``rita`` and ``node-a``; Org B with ``bert`` and ``otto`` and ``node-b``; a ``cohort``
dataset on each node) and signs in through the login form as a browser would.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest

from hubtools import (
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    COLUMNS,
    PASSWORD,
    SQLITE_ONLY,
    TestClient,
    World,
    bearer,
    done,
    make_person,
    mean_output,
)
from medfed.hub.web.session import LOGIN_CSRF_COOKIE, SESSION_COOKIE

pytestmark = SQLITE_ONLY

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF_INPUT.search(html)
    assert found, "page has no CSRF field"
    return found.group(1)


def sign_in(api: TestClient, username: str, password: str = PASSWORD) -> str:
    """Sign in through the form; returns the CSRF token of the signed-in session."""
    page = api.get("/login")
    assert page.status_code == 200
    body = {"username": username, "password": password, "csrf_token": csrf_of(page.text)}
    response = api.post("/login", data=body, follow_redirects=False)
    assert response.status_code == 303, response.text
    return csrf_of(api.get("/projects").text)


def test_login_sets_an_httponly_lax_session_cookie_and_logout_revokes_the_token(
    world: World,
) -> None:
    api = world.api
    page = api.get("/login")
    assert LOGIN_CSRF_COOKIE in page.cookies
    body = {"username": "rita", "password": PASSWORD, "csrf_token": csrf_of(page.text)}
    response = api.post("/login", data={**body, "next": "/projects"}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/projects"
    cookie = next(h for h in response.headers.get_list("set-cookie") if SESSION_COOKIE in h)
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    token = api.cookies[SESSION_COOKIE]
    assert api.get("/api/me", headers=bearer(token)).json()["username"] == "rita"
    projects = api.get("/projects")
    assert projects.status_code == 200 and "Project P" in projects.text

    out = api.post("/logout", data={"csrf_token": csrf_of(projects.text)}, follow_redirects=False)
    assert out.status_code == 303
    assert api.get("/api/me", headers=bearer(token)).status_code == 401  # revoked
    assert SESSION_COOKIE not in api.cookies
    again = api.get("/projects", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == "/login?next=/projects"


def test_wrong_password_shows_the_form_again_with_the_reason(world: World) -> None:
    page = world.api.get("/login")
    body = {"username": "rita", "password": "wrong-password", "csrf_token": csrf_of(page.text)}
    response = world.api.post("/login", data=body)
    assert response.status_code == 401
    assert "wrong username or password" in response.text
    assert SESSION_COOKIE not in world.api.cookies


def test_a_login_post_without_the_form_token_is_refused(world: World) -> None:
    world.api.get("/login")
    body = {"username": "rita", "password": PASSWORD, "csrf_token": "forged"}
    response = world.api.post("/login", data=body, follow_redirects=False)
    assert response.status_code == 403
    assert "CSRF" in response.text
    assert SESSION_COOKIE not in world.api.cookies


def test_a_signed_in_post_without_the_session_csrf_token_is_refused_and_changes_nothing(
    world: World,
) -> None:
    api = world.api
    csrf = sign_in(api, "rita")
    before = world.count("projects")
    for data in ({"name": "forged"}, {"name": "forged", "csrf_token": "x" * len(csrf)}):
        response = api.post("/projects", data=data, follow_redirects=False)
        assert response.status_code == 403
        assert "CSRF token is missing or wrong" in response.text
        assert "Traceback" not in response.text
    assert world.count("projects") == before
    # the same form with the session's token works
    ok = api.post("/projects", data={"name": "Web P", "csrf_token": csrf}, follow_redirects=False)
    assert ok.status_code == 303 and world.count("projects") == before + 1


def test_another_sessions_csrf_token_does_not_work(world: World) -> None:
    api = world.api
    stale = sign_in(api, "rita")
    api.cookies.clear()
    sign_in(api, "otto")
    response = api.post("/projects", data={"name": "x", "csrf_token": stale})
    assert response.status_code == 403


def test_anonymous_visitors_see_the_catalogue_but_no_unpublished_dataset(world: World) -> None:
    home = world.api.get("/")
    assert home.status_code == 200
    assert "Dataset catalogue" in home.text
    assert 'class="card dataset"' not in home.text  # both are released, none published
    page = world.api.get(f"/datasets/{world.node_a.dataset_id}")
    assert page.status_code == 404
    assert "not found" in page.text and "Traceback" not in page.text


@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        ({"algorithm": "mean", "params_json": "{not json"}, 422, "not valid JSON"),
        ({"algorithm": "mean", "params_json": "[1, 2]"}, 422, "must be a JSON object"),
        ({"algorithm": "no-such-algorithm", "columns": "age"}, 422, "unknown algorithm"),
        ({"algorithm": "count", "where": "age >"}, 422, "filter"),
        ({"algorithm": "count", "datasets": []}, 422, "datasets"),
        ({"algorithm": "mean", "columns": "nope"}, 422, "unknown column"),
    ],
)
def test_the_run_form_rejects_bad_input_with_a_readable_message_and_no_task(
    world: World, form: dict[str, object], status: int, message: str
) -> None:
    csrf = sign_in(world.api, "rita")
    data: dict[str, object] = {"datasets": [world.node_a.dataset_id], "csrf_token": csrf, **form}
    response = world.api.post(f"/projects/{world.project_id}/tasks", data=data)
    assert response.status_code == status, response.text
    assert message.lower() in response.text.lower()
    assert "Traceback" not in response.text
    assert world.count("tasks") == 0


def test_a_task_on_data_the_project_is_not_entitled_to_is_refused_with_the_reason(
    world: World,
) -> None:
    csrf = sign_in(world.api, "rita")
    created = world.api.post("/projects", data={"name": "Fresh", "csrf_token": csrf})
    assert created.status_code == 200 and "no dataset it may use yet" in created.text
    project_id = int(str(created.url).rsplit("/", 1)[1])
    data = {"algorithm": "count", "datasets": [world.node_a.dataset_id], "csrf_token": csrf}
    response = world.api.post(f"/projects/{project_id}/tasks", data=data)
    assert response.status_code == 403
    assert "holds no entitlement" in response.text
    assert world.count("tasks") == 0


def test_a_project_of_someone_else_is_a_readable_403(world: World) -> None:
    sign_in(world.api, "otto")
    response = world.api.get(f"/projects/{world.project_id}")
    assert response.status_code == 403
    assert f"not a member of project {world.project_id}" in response.text


def test_static_files_are_served(world: World) -> None:
    assert world.api.get("/static/htmx.min.js").status_code == 200
    css = world.api.get("/static/medfed.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]


def publish(api: TestClient, dataset_id: int, *moves: str) -> None:
    """Move a dataset through the lifecycle with the admin page's buttons (as the hub admin)."""
    csrf = sign_in(api, ADMIN_USERNAME, ADMIN_PASSWORD)
    for move in moves:
        data = {"action": move, "csrf_token": csrf}
        response = api.post(f"/admin/datasets/{dataset_id}/lifecycle", data=data)
        assert response.status_code == 200, response.text
    api.post("/logout", data={"csrf_token": csrf})
    api.cookies.clear()


def test_anonymous_visitors_see_published_datasets_only(world: World) -> None:
    publish(world.api, world.node_a.dataset_id, "publish")
    home = world.api.get("/")
    assert home.text.count('class="card dataset"') == 1
    assert f'href="/datasets/{world.node_a.dataset_id}"' in home.text
    assert f'href="/datasets/{world.node_b.dataset_id}"' not in home.text
    page = world.api.get(f"/datasets/{world.node_a.dataset_id}")
    assert page.status_code == 200 and "published" in page.text
    assert f"mfd.{world.node_a.dataset_id}" in page.text  # its persistent id
    assert world.api.get(f"/datasets/{world.node_b.dataset_id}").status_code == 404
    # a facet link narrows the results and keeps the search words
    facets = world.api.get("/catalogue", params={"q": "cohort", "state": "published"})
    assert facets.text.count('class="card dataset"') == 1


def test_lifecycle_buttons_are_refused_for_someone_who_is_not_an_author(world: World) -> None:
    publish(world.api, world.node_a.dataset_id, "publish")
    csrf = sign_in(world.api, "otto")
    data = {"action": "invalidate", "reason": "nope", "csrf_token": csrf}
    response = world.api.post(f"/admin/datasets/{world.node_a.dataset_id}/lifecycle", data=data)
    assert response.status_code == 403
    assert "needs a steward or admin" in response.text
    bad = world.api.post(
        f"/admin/datasets/{world.node_a.dataset_id}/lifecycle",
        data={"action": "explode", "csrf_token": csrf},
    )
    assert bad.status_code == 422 and "unknown lifecycle action" in bad.text


def test_apply_return_resubmit_approve_and_revoke_through_the_pages(world: World) -> None:
    api = world.api
    dataset_id = world.node_a.dataset_id
    publish(api, dataset_id, "publish")
    dac = make_person(api, bearer(world.admin.token), "dana", world.org_a, ["dac"])
    applications, entitlements = world.count("access_applications"), world.count("entitlements")

    csrf = sign_in(api, "rita")
    created = api.post("/projects", data={"name": "Web study", "csrf_token": csrf})
    project_id = int(str(created.url).rsplit("/", 1)[1])
    form = api.get(f"/applications/new?dataset={dataset_id}&project={project_id}")
    assert form.status_code == 200 and f'value="{dataset_id}" checked' in form.text
    application = {
        "csrf_token": csrf,
        "project_id": str(project_id),
        "datasets": str(dataset_id),
        "purpose": "survival by grade",
        "duo_codes": ["HMB", ""],
        "ethics_reference": "EC-1",
        "duration_days": "100",
    }
    missing = api.post("/applications", data={**application, "purpose": ""})
    assert missing.status_code == 422 and "purpose" in missing.text
    assert world.count("access_applications") == applications
    files = {"ethics_file": ("ethics.pdf", b"%PDF approval", "application/pdf")}
    sent = api.post("/applications", data=application, files=files)
    assert sent.status_code == 200, sent.text
    assert 'id="application-state">submitted' in sent.text and "ethics.pdf" in sent.text
    mine = api.get("/applications")
    assert ">submitted<" in mine.text
    project = api.get(f"/projects/{project_id}")
    assert "no dataset it may use yet" in project.text  # nothing granted yet
    api.cookies.clear()

    csrf = sign_in(api, dac.username)
    queue = api.get("/dac")
    assert queue.status_code == 200
    assert queue.text.count("/applications/") == 1 and "matches" in queue.text
    app_id = int(re.findall(r'href="/applications/(\d+)"', queue.text)[0])
    decision = {"csrf_token": csrf, "decision": "approve", "end_date": ""}
    no_end = api.post(f"/dac/applications/{app_id}", data=decision)
    assert no_end.status_code == 422 and "needs the end date" in no_end.text
    too_long = api.post(f"/dac/applications/{app_id}", data={**decision, "end_date": "2099-01-01"})
    assert too_long.status_code == 422 and "after the 100 days asked" in too_long.text
    returned = api.post(f"/dac/applications/{app_id}", data={**decision, "decision": "return"})
    assert returned.status_code == 422 and "needs a comment" in returned.text
    back = {**decision, "decision": "return", "comment": "name the ethics committee"}
    returned = api.post(f"/dac/applications/{app_id}", data=back)
    assert 'id="application-state">returned' in returned.text
    assert world.count("entitlements") == entitlements
    api.cookies.clear()
    csrf = sign_in(api, "rita")
    again = api.post(f"/applications/{app_id}/submit", data={"csrf_token": csrf})
    assert 'id="application-state">submitted' in again.text
    assert "name the ethics committee" in again.text  # the DAC's comment in the history
    api.cookies.clear()
    csrf = sign_in(api, dac.username)
    decision["csrf_token"] = csrf
    end = (date.today() + timedelta(days=60)).isoformat()
    approved = api.post(f"/dac/applications/{app_id}", data={**decision, "end_date": end})
    assert approved.status_code == 200 and 'id="application-state">approved' in approved.text
    assert world.count("entitlements") == entitlements + 1
    api.cookies.clear()

    sign_in(api, "rita")
    project = api.get(f"/projects/{project_id}")
    assert f'name="datasets" value="{dataset_id}"' in project.text
    assert ">active<" in project.text and end in project.text
    api.cookies.clear()
    decision["csrf_token"] = sign_in(api, dac.username)

    revoked = api.post(f"/dac/applications/{app_id}", data={**decision, "decision": "revoke"})
    assert 'id="application-state">revoked' in revoked.text
    api.cookies.clear()

    sign_in(api, "rita")
    project = api.get(f"/projects/{project_id}")
    assert f'name="datasets" value="{dataset_id}"' not in project.text
    assert ">revoked<" in project.text and end in project.text


def test_the_dac_queue_needs_the_dac_role(world: World) -> None:
    sign_in(world.api, "rita")
    response = world.api.get("/dac")
    assert response.status_code == 403 and "role dac" in response.text


def test_the_run_form_starts_a_task_whose_page_polls_until_the_result_is_there(
    world: World,
) -> None:
    csrf = sign_in(world.api, "rita")
    data = {
        "algorithm": "mean",
        "columns": "age",
        "where": "age > 20",
        "datasets": [world.node_a.dataset_id],
        "csrf_token": csrf,
    }
    page = world.api.post(f"/projects/{world.project_id}/tasks", data=data)
    assert page.status_code == 200 and 'id="task-state">running' in page.text
    task_id = int(str(page.url).rsplit("/", 1)[1])
    assert f'hx-get="/tasks/{task_id}/status"' in page.text  # htmx keeps polling
    task = world.task(task_id)
    assert task["params"]["columns"] == ["age"] and task["params"]["where"] is not None

    assignment = world.claim(world.node_a)
    assert assignment is not None
    answer = world.post_outcome(
        world.node_a, assignment["run_id"], done(assignment, mean_output(10, 500.0))
    )
    assert answer.status_code == 200, answer.text
    fragment = world.api.get(f"/tasks/{task_id}/status")
    assert fragment.status_code == 200
    assert 'id="task-state">completed' in fragment.text
    assert "hx-get" not in fragment.text  # finished: the poll stops
    assert "50.0" in fragment.text  # the mean of 10 values summing to 500
    assert "<html" not in fragment.text  # a fragment, not a page


def test_an_invalidated_dataset_keeps_a_tombstone_page_with_its_reason(world: World) -> None:
    dataset_id = world.node_a.dataset_id
    publish(world.api, dataset_id, "publish")
    csrf = sign_in(world.api, ADMIN_USERNAME, ADMIN_PASSWORD)
    path = f"/admin/datasets/{dataset_id}/lifecycle"
    no_reason = world.api.post(path, data={"action": "invalidate", "csrf_token": csrf})
    assert no_reason.status_code == 422 and "needs a reason" in no_reason.text
    data = {"action": "invalidate", "reason": "consent withdrawn", "csrf_token": csrf}
    assert world.api.post(path, data=data).status_code == 200
    world.api.cookies.clear()
    page = world.api.get(f"/datasets/{dataset_id}")  # anonymous, by link
    assert page.status_code == 200
    assert "invalidated" in page.text and "consent withdrawn" in page.text
    assert 'id="apply"' not in page.text
    assert 'class="card dataset"' not in world.api.get("/").text  # not in search results


def test_the_dac_queue_flags_duo_mismatches(world: World) -> None:
    api, admin = world.api, bearer(world.admin.token)
    body = {"name": "registry", "columns": COLUMNS, "row_count": 50}
    registered = api.post("/api/node/datasets", json=body, headers=world.node_a.headers)
    assert registered.status_code == 200, registered.text
    dataset_id = registered.json()["id"]
    duo = {"duo_codes": ["HMB", "NCU"]}
    assert api.patch(f"/api/datasets/{dataset_id}/metadata", json=duo, headers=admin).is_success
    publish(api, dataset_id, "release", "publish")
    dac = make_person(api, admin, "dana", world.org_a, ["dac"])

    csrf = sign_in(api, "rita")
    page = api.get(f"/datasets/{dataset_id}")
    assert "DUO:0000046" in page.text  # NCU shown with its id and label
    application = {
        "csrf_token": csrf,
        "project_id": str(world.project_id),
        "datasets": str(dataset_id),
        "purpose": "a commercial model",
        "duo_codes": "GRU",
        "commercial": "true",
        "ethics_reference": "EC-2",
        "duration_days": "30",
    }
    sent = api.post("/applications", data=application)
    assert sent.status_code == 200, sent.text
    assert "DUO mismatches" in sent.text and "the intended use is commercial" in sent.text
    api.cookies.clear()

    sign_in(api, dac.username)
    queue = api.get("/dac")
    assert "2 mismatch(es)" in queue.text


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/\\evil.example"])
def test_login_never_redirects_to_another_site(world: World, target: str) -> None:
    page = world.api.get("/login")
    body = {"username": "rita", "password": PASSWORD, "csrf_token": csrf_of(page.text)}
    response = world.api.post("/login", data={**body, "next": target}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"


def test_an_org_admin_adds_a_user_with_roles_and_a_researcher_may_not(world: World) -> None:
    csrf = sign_in(world.api, "bert")
    page = world.api.get("/admin")
    assert page.status_code == 200 and "Organization Org B" in page.text and "node-b" in page.text
    assert "otto" in page.text and "rita" not in page.text  # only its own organization
    form = {
        "csrf_token": csrf,
        "username": "dina",
        "password": "long-enough-1",
        "organization_id": str(world.org_b),
        "roles": ["dac", "steward"],
    }
    added = world.api.post("/admin/users", data=form)
    assert added.status_code == 200 and "dina" in added.text
    users = world.api.get("/api/users", headers=world.org_admin.headers).json()
    assert next(u for u in users if u["username"] == "dina")["roles"] == ["dac", "steward"]
    other_org = world.api.post("/admin/users", data={**form, "organization_id": str(world.org_a)})
    assert other_org.status_code == 403 and "needs an admin of organization" in other_org.text
    short = world.api.post("/admin/users", data={**form, "username": "dino", "password": "x"})
    assert short.status_code == 422 and "password" in short.text
    world.api.cookies.clear()

    sign_in(world.api, "rita")
    refused = world.api.get("/admin")
    assert refused.status_code == 403 and "admin or steward role" in refused.text
