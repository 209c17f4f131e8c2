"""The committed ``openapi.json`` is the schema the running hub serves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubtools import TestClient
from medfed.hub.app import create_app
from medfed.hub.config import HubSettings
from medfed.hub.openapi import main, render

COMMITTED = Path(__file__).resolve().parents[2] / "openapi.json"
REGENERATE = (
    "openapi.json is stale; regenerate it with: python -m medfed.hub.openapi > openapi.json"
)


def test_committed_openapi_json_equals_the_running_apps_schema(tmp_path: Path) -> None:
    settings = HubSettings(
        data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'hub.db'}", dev_mode=True
    )
    app = create_app(settings)
    try:
        with TestClient(app) as api:
            served = api.get("/openapi.json").json()
        expected = render(app)
    finally:
        app.state.engine.dispose()
    assert json.loads(expected) == served
    assert COMMITTED.exists(), REGENERATE
    assert COMMITTED.read_text(encoding="utf-8") == expected, REGENERATE


def test_the_generator_prints_the_committed_file(capsys: pytest.CaptureFixture[str]) -> None:
    main()
    assert capsys.readouterr().out == COMMITTED.read_text(encoding="utf-8"), REGENERATE
