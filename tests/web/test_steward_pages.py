"""The stewards' query page (server-rendered, through the TestClient like a browser)."""

from __future__ import annotations

import re

from hubtools import PASSWORD, SQLITE_ONLY, TestClient, World, done, make_person

pytestmark = SQLITE_ONLY

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
FILTER = {"column": "age", "op": ">=", "value": 50}


def sign_in(api: TestClient, username: str) -> None:
    page = api.get("/login")
    found = CSRF_INPUT.search(page.text)
    assert found
    body = {"username": username, "password": PASSWORD, "csrf_token": found.group(1)}
    assert api.post("/login", data=body, follow_redirects=False).status_code == 303


def withheld_by_differencing(world: World) -> int:
    """A count: node A releases it, node B withholds it by its differencing rule."""
    task = world.create_task("count", params={"where": FILTER})
    for node, rule in ((world.node_a, "none"), (world.node_b, "differencing")):
        run = world.claim(node)
        assert run is not None
        if rule == "none":
            body = done(run, {"n": 40})
        else:
            body = {"lease_id": run["lease_id"], "status": "done", "output_status": "suppressed"}
        body |= {"filter_hash": "c" * 64, "rowset_fingerprint": "d" * 64, "rule": rule}
        assert world.post_outcome(node, run["run_id"], body).status_code == 200
    return int(task["id"])


def test_a_steward_sees_per_project_the_queries_with_the_differencing_refusal_flagged(
    world: World,
) -> None:
    task_id = withheld_by_differencing(world)
    make_person(world.api, world.admin.headers, "stella", world.org_b, ["steward"])
    sign_in(world.api, "stella")
    home = world.api.get("/projects")
    assert 'href="/audit/queries"' in home.text  # the steward's menu has the page
    page = world.api.get("/audit/queries")
    assert page.status_code == 200, page.text
    html = page.text
    assert "Queries on Org B's data" in html
    assert "Project Project P" in html and "1 flagged" in html
    assert f"#{task_id}" in html and "rita" in html and "count" in html
    assert "age &gt;= 50" in html  # the filter text, escaped
    assert "cccccccccccc" in html and "dddddddddddd" in html  # hashes, shortened
    assert "⚑ differencing" in html and 'class="flagged"' in html
    assert "node-a" not in html  # another organization's run is not shown
    flagged = world.api.get("/audit/queries", params={"flagged": 1, "project": 1})
    assert flagged.status_code == 200 and "⚑ differencing" in flagged.text


def test_a_researcher_gets_a_403_page_and_no_menu_entry(world: World) -> None:
    withheld_by_differencing(world)
    sign_in(world.api, "rita")
    assert 'href="/audit/queries"' not in world.api.get("/projects").text
    page = world.api.get("/audit/queries")
    assert page.status_code == 403
    assert "steward" in page.text and "differencing" not in page.text
