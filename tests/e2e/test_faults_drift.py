"""Dataset drift with real processes: a changed file under a running node, then a restart.

A content change under the same schema becomes the hub's next version and the released
one stays exactly as it was; a schema change (a stray text value turns ``age`` into a
string column) is refused — the node logs which column changed, registers nothing and
keeps running — until the steward runs ``medfed node datasets new-version``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from medfed.common.resources import DatasetPublic
from medfed.node.manifest import file_manifest_root
from medfed.testing.demo import split_gbsg2
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e


def _wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not reached in time: {what}")


def test_content_changes_become_versions_and_schema_changes_are_refused(
    tmp_path: Path, gbsg2: pd.DataFrame
) -> None:
    shares = {name: {"gbsg2": share} for name, share in split_gbsg2(gbsg2).items()}
    with Federation(tmp_path, shares, grant_access=False) as fed:
        node = fed.nodes["hospital-a"]
        path = node.datasets["gbsg2"]

        def versions() -> list[DatasetPublic]:
            found = [d for d in fed.admin.datasets.list() if d.node_name == "hospital-a"]
            return sorted(found, key=lambda d: d.version)

        (released,) = versions()
        assert released.state == "released" and released.manifest_root == file_manifest_root(path)
        frame = pd.read_csv(path)

        # the same columns, one value changed: the next version, the released one as it was
        frame.loc[0, "time"] = int(frame.loc[0, "time"]) + 1
        frame.to_csv(path, index=False)
        node.stop()
        node.start()
        _wait_until(lambda: len(versions()) == 2, what="version 2 registered")
        first, second = versions()
        # untouched and still released; only linked forward to its successor
        assert first.model_dump(exclude={"next_id"}) == released.model_dump(exclude={"next_id"})
        assert first.next_id == second.id
        assert second.version == 2 and second.state == "draft"
        assert second.manifest_root == file_manifest_root(path) != released.manifest_root
        assert second.columns == released.columns

        # a stray text value turns age into a string column: refused, nothing registered
        frame["age"] = frame["age"].astype(object)
        frame.loc[3, "age"] = "unknown"
        frame.to_csv(path, index=False)
        node.stop()
        node.start()
        log = node.folder / "node.log"
        _wait_until(lambda: "column 'age' is string, was integer" in log.read_text())
        text = log.read_text()
        assert "medfed node datasets new-version gbsg2" in text
        assert "unknown" not in text.split("column 'age' is string")[1].splitlines()[0]
        time.sleep(1.0)  # a registration, if the node made one, would show by now
        assert [d.model_dump() for d in versions()] == [first.model_dump(), second.model_dump()]
        assert node.process is not None and node.process.poll() is None

        # the steward accepts the new schema; the next start registers it
        accepted = subprocess.run(
            [
                sys.executable,
                "-m",
                "medfed.cli.main",
                "node",
                "datasets",
                "new-version",
                "gbsg2",
                "--config",
                str(node.config_path),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert accepted.returncode == 0, accepted.stderr
        node.stop()
        node.start()
        _wait_until(
            lambda: {c.name: c.type.value for c in versions()[-1].columns}.get("age") == "string",
            what="the new schema registered",
        )
        assert versions()[0].model_dump() == first.model_dump()
        assert node.process.poll() is None
