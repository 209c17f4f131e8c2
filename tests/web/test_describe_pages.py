"""The describe form on a draft's dataset page (TestClient against the real app and database).

A steward of the organization that holds the draft sees the form, saves a description
(CSRF checked), and the catalogue search finds it; a bad field comes back in the form
with what was typed and the reason, and nothing is stored; other people see no form and
their posts are refused; a released dataset has no form and refuses a post.
"""

from __future__ import annotations

import re

from cataloguetools import move, register, state_of
from hubtools import PASSWORD, SQLITE_ONLY, TestClient, World, make_person

pytestmark = SQLITE_ONLY

CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
DESCRIPTION = "Recurrence-free survival after mastectomy in node-positive patients"


def csrf_of(html: str) -> str:
    found = CSRF_INPUT.search(html)
    assert found, "page has no CSRF field"
    return found.group(1)


def sign_in(api: TestClient, username: str) -> str:
    page = api.get("/login")
    body = {"username": username, "password": PASSWORD, "csrf_token": csrf_of(page.text)}
    assert api.post("/login", data=body, follow_redirects=False).status_code == 303
    return csrf_of(api.get("/projects").text)


def form(csrf: str, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "csrf_token": csrf,
        "title": "Breast cancer cohort",
        "description": DESCRIPTION,
        "keywords": "breast cancer, survival",
        "themes": "HEAL",
        "duo_codes": "HMB, IRB",
        "contact": "Stella <stella@org-b.example>",
        "license": "CC-BY-4.0",
        "access_rights": "RESTRICTED",
        "access_conditions": ["REMOTE_PROCESSING"],
        "unique_individuals": "680",
        "records": "686",
    }
    base.update(fields)
    return base


def test_a_steward_describes_a_draft_and_search_finds_it(world: World) -> None:
    make_person(world.api, world.admin.headers, "stella", world.org_b, ["steward"])
    dataset_id = register(world, world.node_b, "study")["id"]
    csrf = sign_in(world.api, "stella")
    page = world.api.get(f"/datasets/{dataset_id}")
    assert page.status_code == 200 and 'id="describe-form"' in page.text

    saved = world.api.post(
        f"/datasets/{dataset_id}/describe", data=form(csrf), follow_redirects=False
    )
    assert saved.status_code == 303 and saved.headers["location"] == f"/datasets/{dataset_id}"
    record = state_of(world, dataset_id)
    assert record["title"] == "Breast cancer cohort" and record["description"] == DESCRIPTION
    assert record["keywords"] == ["breast cancer", "survival"]
    assert record["duo_codes"] == ["HMB", "IRB"] and record["license"] == "CC-BY-4.0"
    assert record["access_conditions"] == ["REMOTE_PROCESSING"] and record["records"] == 686
    shown = world.api.get(f"/datasets/{dataset_id}").text
    assert "stella@org-b.example" in shown and 'value="breast cancer, survival"' in shown
    found = world.api.get("/catalogue", params={"q": "mastectomy"})
    assert found.status_code == 200 and f'href="/datasets/{dataset_id}"' in found.text


def test_bad_fields_come_back_in_the_form_and_nothing_is_stored(world: World) -> None:
    dataset_id = register(world, world.node_b, "study")["id"]
    csrf = sign_in(world.api, "bert")  # Org B's admin: an author too
    before = world.count("ledger_entries")
    for fields, needle in [
        ({"contact": "ring the office"}, "Contact: must include an e-mail address"),
        ({"duo_codes": "HMB, NOPE"}, "unknown DUO code"),
        ({"records": "many"}, "Records: must be a whole number"),
        ({"access_rights": "OPEN"}, "Access rights:"),
        ({"title": "x" * 301}, "Title:"),
    ]:
        response = world.api.post(f"/datasets/{dataset_id}/describe", data=form(csrf, **fields))
        assert response.status_code == 422, fields
        assert 'id="describe-errors"' in response.text and needle in response.text, fields
        assert 'id="describe-form"' in response.text and "Traceback" not in response.text
        assert 'value="breast cancer, survival"' in response.text  # what was typed, kept
    assert world.count("ledger_entries") == before
    assert state_of(world, dataset_id)["title"] is None


def test_no_form_for_others_and_their_posts_are_refused(world: World) -> None:
    dataset_id = register(world, world.node_b, "study")["id"]
    csrf = sign_in(world.api, "otto")  # a researcher of Org B: not an author, drafts hidden
    assert world.api.get(f"/datasets/{dataset_id}").status_code == 404
    refused = world.api.post(f"/datasets/{dataset_id}/describe", data=form(csrf))
    assert refused.status_code == 404
    world.api.cookies.clear()
    csrf = sign_in(world.api, "bert")
    forged = world.api.post(f"/datasets/{dataset_id}/describe", data=form("x" * len(csrf)))
    assert forged.status_code == 403 and "CSRF" in forged.text
    assert state_of(world, dataset_id)["title"] is None

    assert move(world, world.admin.headers, dataset_id, "release").status_code == 200
    page = world.api.get(f"/datasets/{dataset_id}")
    assert page.status_code == 200 and 'id="describe-form"' not in page.text
    late = world.api.post(f"/datasets/{dataset_id}/describe", data=form(csrf))
    assert late.status_code == 409 and "frozen" in late.text
    assert state_of(world, dataset_id)["title"] is None
