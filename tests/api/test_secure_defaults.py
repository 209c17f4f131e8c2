"""Secure defaults of the hub: its secret key, the dev key, file modes, security headers,
and the answers that must not tell a hidden object from a missing one.

Real settings, a real app on SQLite and real files; nothing is mocked.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from hubtools import SQLITE_ONLY, World
from medfed.hub.app import create_app
from medfed.hub.config import HubSettings
from medfed.hub.keys import DEV_KEY_FILE
from medfed.hub.web.headers import API_CSP, PAGE_CSP


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ----------------------------------------------------------------------- secret key


@pytest.mark.parametrize("key", ["", "x", "a" * 31])
def test_outside_dev_mode_a_missing_or_short_secret_key_is_refused(
    tmp_path: Path, key: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        HubSettings(data_dir=tmp_path, secret_key=key, dev_mode=False)
    assert "MEDFED_SECRET_KEY" in str(refused.value) and "32" in str(refused.value)
    assert not (tmp_path / DEV_KEY_FILE).exists()


def test_a_32_byte_secret_key_is_accepted(tmp_path: Path) -> None:
    settings = HubSettings(data_dir=tmp_path, secret_key="k" * 32, dev_mode=False)
    assert settings.secret_key == "k" * 32
    assert "k" * 32 not in repr(settings)


def test_the_dev_key_is_random_per_data_dir_kept_0600_and_reused(tmp_path: Path) -> None:
    first = HubSettings(data_dir=tmp_path / "a", dev_mode=True)
    other = HubSettings(data_dir=tmp_path / "b", dev_mode=True)
    again = HubSettings(data_dir=tmp_path / "a", dev_mode=True)
    assert len(first.secret_key) >= 32 and first.secret_key != other.secret_key
    assert again.secret_key == first.secret_key  # every start and worker signs alike
    key_file = tmp_path / "a" / DEV_KEY_FILE
    assert key_file.read_text().strip() == first.secret_key
    assert _mode(key_file) == 0o600
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [DEV_KEY_FILE]  # no temp left
    assert "change-me" not in first.secret_key


# ----------------------------------------------------------------------- file modes


@SQLITE_ONLY
def test_the_data_folder_database_and_ethics_files_are_private(
    tmp_path: Path, world: World
) -> None:
    data_dir = tmp_path / "fresh"
    app = create_app(HubSettings(data_dir=data_dir, dev_mode=True))
    try:
        assert _mode(data_dir) == 0o700
        assert _mode(data_dir / "hub.db") == 0o600
        assert _mode(data_dir / DEV_KEY_FILE) == 0o600
    finally:
        app.state.engine.dispose()

    draft = world.api.post(
        "/api/access/applications",
        json={
            "project_id": world.project_id,
            "datasets": [world.node_b.dataset_id],
            "purpose": "p",
            "ethics_reference": "EC-9",
            "intended_use": {"codes": ["HMB"]},
            "duration_days": 30,
        },
        headers=world.researcher.headers,
    ).json()
    uploaded = world.api.post(
        f"/api/access/applications/{draft['id']}/ethics-file",
        files={"file": ("approval.pdf", b"%PDF-1.4 names of the committee", "application/pdf")},
        headers=world.researcher.headers,
    )
    assert uploaded.status_code == 200, uploaded.text
    digest = uploaded.json()["ethics_file_sha256"]
    stored = world.app.state.settings.data_dir / "blobs" / digest[:2] / digest  # SQLite: files
    assert _mode(stored) == 0o600 and _mode(stored.parent) == 0o700


# --------------------------------------------------------------------------- headers


@SQLITE_ONLY
def test_pages_carry_security_headers_and_a_csp_without_inline_code(world: World) -> None:
    for path in ("/", "/login", "/catalogue"):
        response = world.api.get(path)
        assert response.status_code == 200
        headers = response.headers
        assert headers["content-security-policy"] == PAGE_CSP
        assert "frame-ancestors 'none'" in PAGE_CSP and "'unsafe-inline'" not in PAGE_CSP
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
        html = response.text
        assert "<style" not in html and " style=" not in html
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []  # every script is a file
        assert re.findall(r"\son[a-z]+=", html) == [] and "javascript:" not in html
    api = world.api.get("/api/health")
    assert api.headers["content-security-policy"] == API_CSP
    assert api.headers["x-content-type-options"] == "nosniff"
    docs = world.api.get("/docs")  # Swagger UI keeps its CDN script: no CSP, other headers
    assert "content-security-policy" not in docs.headers
    assert docs.headers["x-frame-options"] == "DENY"


def test_templates_have_no_inline_script_handler_or_style() -> None:
    templates = Path(create_app.__code__.co_filename).parent / "web" / "templates"
    #: downloaded as a file (Content-Disposition: attachment) and read offline, so it
    #: carries its own stylesheet; it still has no script of any kind
    standalone = {"validation_report.html"}
    for template in templates.glob("*.html"):
        text = template.read_text()
        assert re.findall(r"<script", text) == [] or template.name not in standalone
        assert re.findall(r"<script(?![^>]*\bsrc=)", text) == [], template.name
        assert re.findall(r"\son[a-z]+=", text) == [], template.name
        assert "javascript:" not in text, template.name
        if template.name not in standalone:
            assert "<style" not in text and " style=" not in text, template.name


# ------------------------------------------------------- hidden answers like missing


@SQLITE_ONLY
def test_an_application_for_an_invisible_draft_answers_like_a_missing_dataset(
    world: World,
) -> None:
    draft = world.api.post(
        "/api/node/datasets",
        json={"name": "secret-draft", "columns": [{"name": "age", "type": "integer"}]},
        headers=world.node_b.headers,
    ).json()
    applications = world.count("access_applications")
    answers = []
    for dataset_id in (draft["id"], 999_999):
        response = world.api.post(
            "/api/access/applications",
            json={
                "project_id": world.project_id,
                "datasets": [dataset_id],
                "purpose": "p",
                "ethics_reference": "EC-1",
                "intended_use": {"codes": ["HMB"]},
                "duration_days": 30,
            },
            headers=world.researcher.headers,
        )
        answers.append(
            (response.status_code, response.json()["detail"].replace(str(dataset_id), "N"))
        )
    assert answers[0] == answers[1] == (404, "dataset N not found")
    assert world.count("access_applications") == applications


@SQLITE_ONLY
def test_an_unpublished_pid_answers_anonymous_callers_like_a_missing_one(world: World) -> None:
    released = world.node_b.dataset_id
    hidden = world.api.get(f"/pid/mfd.{released}", params={"format": "json"})
    missing = world.api.get("/pid/mfd.999999", params={"format": "json"})
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"].replace(str(released), "N") == missing.json()["detail"].replace(
        "999999", "N"
    )
    html = world.api.get(f"/pid/mfd.{released}", follow_redirects=False)
    assert html.status_code == 404 and "cohort" not in html.text
    entitled = world.api.get(
        f"/pid/mfd.{released}", params={"format": "json"}, headers=world.researcher.headers
    )
    assert entitled.status_code == 200 and entitled.json()["name"] == "cohort"


@SQLITE_ONLY
def test_a_dac_of_another_organization_cannot_set_the_privacy_budget(world: World) -> None:
    path = f"/api/projects/{world.project_id}/privacy-budget"
    body = {"epsilon": 1000.0, "delta": 1e-5}
    refused = world.api.put(path, json=body, headers=world.org_admin.headers)  # Org B admin
    assert refused.status_code == 403 and "entitled" in refused.json()["detail"]
    assert world.api.get(path, headers=world.researcher.headers).status_code == 404  # none set
