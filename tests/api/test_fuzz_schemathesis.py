"""Schemathesis against the real hub app (ASGI, SQLite world): no 5xx, no answer off-schema.

Every operation of ``openapi.json`` gets a bounded number of generated requests (valid and
invalid), sent as the hub administrator, a researcher or a node depending on the route;
each answer must not be a server error, and its status, content type, headers and body
must be those the schema documents. The world is built once for the module (a copy of
the SQLite template), so the whole run stays well under a minute.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import checks
from schemathesis.specs.openapi import checks as openapi_checks

from hubdatabases import Templates, settings_for
from hubtools import bearer
from medfed.hub.app import create_app

EXAMPLES = 8
CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_world(
    world_templates: Templates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FastAPI, dict[str, Any]]]:
    template = world_templates.get("sqlite")
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "hub.db"
    shutil.copyfile(template.location, path)
    if Path(template.location + "-wal").exists():
        shutil.copyfile(template.location + "-wal", str(path) + "-wal")
    app = create_app(settings_for(f"sqlite:///{path}", folder / "hub", long_poll_seconds=0.1))
    try:
        yield app, template.seed
    finally:
        app.state.engine.dispose()


def _headers(seed: dict[str, Any], path: str, method: str) -> dict[str, str]:
    if path.startswith("/api/node/"):
        return bearer(seed["node_a"].secret)
    if method.upper() in ("GET", "HEAD"):
        return dict(seed["researcher"].headers)
    return dict(seed["admin"].headers)


def test_no_server_error_and_no_answer_off_schema(
    fuzz_world: tuple[FastAPI, dict[str, Any]],
) -> None:
    app, seed = fuzz_world
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
        )
        def run(case: Any) -> None:
            for name in ("wait", "timeout"):  # long polls: answer at once, not after seconds
                if isinstance(case.query, dict) and name in case.query:
                    case.query[name] = 0
            headers = _headers(seed, case.operation.path, case.method)
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except BaseException as exc:  # failure groups too: collect each operation's, report all
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.label}: {str(exc)[:600]}")
    assert operations > 50
    assert not failures, "\n\n".join(failures)
