"""The hub's OpenAPI schema as committed in ``openapi.json`` at the repository root.

Regenerate it with ``python -m medfed.hub.openapi > openapi.json``. The schema depends on
neither settings nor data, so :func:`main` builds the app in dev mode on a throwaway SQLite
database in a temporary directory, prints :func:`render` of it and removes the directory.
``tests/api/test_openapi.py`` checks that the committed file equals what the app serves.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from fastapi import FastAPI

from medfed.hub.app import create_app
from medfed.hub.config import HubSettings

__all__ = ["main", "render", "schema_text"]


def render(app: FastAPI) -> str:
    """The app's schema as stable text: two-space indent, sorted keys, a final newline."""
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


def schema_text() -> str:
    """:func:`render` of a fresh hub app (dev mode, temporary SQLite database)."""
    with tempfile.TemporaryDirectory(prefix="medfed-openapi-") as tmp:
        data_dir = Path(tmp)
        settings = HubSettings(
            data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'hub.db'}", dev_mode=True
        )
        app = create_app(settings)
        try:
            return render(app)
        finally:
            app.state.engine.dispose()


def main() -> None:
    sys.stdout.write(schema_text())


if __name__ == "__main__":
    main()
