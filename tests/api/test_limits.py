"""Limits before work: body sizes per route class, login throttling and blob quotas.

The 200 MB test runs a real hub process and reads its resident memory from
``/proc/<pid>/status`` before and after; the body comes from a generator, so neither side
holds it. The rest runs the real app through TestClient on SQLite (the checks happen at
the edge, before storage).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hubtools import PASSWORD, SQLITE_ONLY, TestClient, World, bearer, make_person
from medfed.testing.processes import HubProcess

MiB = 1024 * 1024


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def _body(total: int, chunk: int = MiB) -> Iterator[bytes]:
    piece = b"[" + b"1," * (chunk // 2 - 1) + b"1"
    sent = 0
    while sent < total:
        yield piece
        sent += len(piece)


def test_a_200mb_anonymous_body_is_refused_without_growing_the_hub(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub")
    hub.start()
    try:
        assert hub.process is not None
        pid = hub.process.pid
        with httpx.Client(base_url=hub.url, timeout=120) as client:
            client.get("/api/health")  # warm: imports and first request paid before measuring
            client.post("/api/tasks", json={})
            before = _rss_kib(pid)
            streamed = client.post(
                "/api/tasks",
                content=_body(200 * MiB),
                headers={"Content-Type": "application/json"},
            )
            declared = client.post(
                "/api/tasks",
                content=_body(200 * MiB),
                headers={"Content-Type": "application/json", "Content-Length": str(200 * MiB)},
            )
            after = _rss_kib(pid)
        assert streamed.status_code in (401, 413), streamed.text
        assert declared.status_code == 413, declared.text
        assert "limit" in declared.json()["detail"] or "larger" in declared.json()["detail"]
        growth_mib = (after - before) / 1024
        print(f"hub RSS before {before} KiB, after {after} KiB, growth {growth_mib:.1f} MiB")
        assert growth_mib < 20, growth_mib
    finally:
        hub.stop()


@SQLITE_ONLY
def test_json_bodies_over_the_limit_get_413_before_parsing(world: World) -> None:
    big = {"name": "x" * (2 * MiB)}
    response = world.api.post("/api/projects", json=big, headers=world.researcher.headers)
    assert response.status_code == 413
    assert str(1024 * 1024) in response.json()["detail"]
    names = [p["name"] for p in world.api.get("/api/projects", headers=world.admin.headers).json()]
    assert not any(n.startswith("xxx") for n in names)


@SQLITE_ONLY
def test_a_huge_password_is_refused_at_the_edge_and_a_long_one_by_the_schema(
    world: World,
) -> None:
    huge = world.api.post(
        "/api/auth/login", json={"username": "rita", "password": "p" * (20 * MiB)}
    )
    assert huge.status_code == 413
    long = world.api.post("/api/auth/login", json={"username": "rita", "password": "p" * 201})
    assert long.status_code == 422
    assert long.json()["errors"][0]["loc"] == ["body", "password"]


@SQLITE_ONLY
def test_an_unauthenticated_result_upload_is_refused_before_its_body_is_read(
    world: World,
) -> None:
    response = world.api.post(
        "/api/node/runs/1/outcome",
        content=b"{" + b" " * (2 * MiB) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413  # anonymous: the small cap, whatever the route


# ------------------------------------------------------------------------ login throttle


def _login(api: TestClient, username: str, password: str) -> httpx.Response:
    return api.post("/api/auth/login", json={"username": username, "password": password})


@SQLITE_ONLY
def test_five_failures_lock_the_account_even_for_the_right_password(world: World) -> None:
    for _ in range(5):
        assert _login(world.api, "rita", "wrong-password").status_code == 401
    locked = _login(world.api, "rita", PASSWORD)
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0
    assert "too many failed logins" in locked.json()["detail"]
    # from another address the account is still locked; another account is not
    with TestClient(world.app, client=("198.51.100.7", 50000)) as other:
        assert _login(other, "rita", PASSWORD).status_code == 429
        assert _login(other, "otto", PASSWORD).status_code == 201


@SQLITE_ONLY
def test_failures_across_accounts_lock_the_address(world: World) -> None:
    for name in ("u1", "u2", "u3", "u4", "u5"):
        assert _login(world.api, name, "wrong-password").status_code == 401
    assert _login(world.api, "rita", PASSWORD).status_code == 429
    with TestClient(world.app, client=("198.51.100.8", 50000)) as other:
        assert _login(other, "rita", PASSWORD).status_code == 201


@SQLITE_ONLY
def test_the_web_login_form_is_throttled_too(world: World) -> None:
    page = world.api.get("/login")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    csrf = found.group(1)
    form = {"username": "rita", "password": "wrong-password", "csrf_token": csrf}
    for _ in range(5):
        assert world.api.post("/login", data=form).status_code == 401
    locked = world.api.post("/login", data={**form, "password": PASSWORD})
    assert locked.status_code == 429
    assert "Retry-After" in locked.headers


# ---------------------------------------------------------------------------- blob quota


def _put_blob(world: World, headers: dict[str, str], data: bytes) -> httpx.Response:
    sha = hashlib.sha256(data).hexdigest()
    return world.api.put("/api/blobs", content=data, headers={**headers, "X-Content-SHA256": sha})


@SQLITE_ONLY
def test_only_researchers_upload_weights(world: World) -> None:
    auditor = make_person(world.api, world.admin.headers, "audrey", world.org_a, ["auditor"])
    refused = _put_blob(world, auditor.headers, b"weights" * 10)
    assert refused.status_code == 403
    assert "researchers" in refused.json()["detail"]
    node = _put_blob(world, bearer(world.node_a.secret), b"weights" * 10)
    assert node.status_code == 403
    assert _put_blob(world, world.researcher.headers, b"weights" * 10).status_code == 200


@SQLITE_ONLY
@pytest.mark.hub(blob_quota_bytes=1500)
def test_a_users_blob_quota_counts_every_upload(world: World) -> None:
    first = _put_blob(world, world.researcher.headers, b"a" * 1000)
    assert first.status_code == 200, first.text
    over = _put_blob(world, world.researcher.headers, b"b" * 1000)
    assert over.status_code == 413
    assert "500 bytes" in over.json()["detail"]
    store = world.app.state.settings.data_dir / "blobs"
    assert not (store / hashlib.sha256(b"b" * 1000).hexdigest()[:2]).exists()
    assert _put_blob(world, world.outsider.headers, b"b" * 1000).status_code == 200
