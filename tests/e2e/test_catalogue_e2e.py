"""The catalogue with real processes: nodes send content manifests, the CLI moves datasets.

Each node agent registers its share of GBSG2 with the manifest root it computed; anyone
holding the node's file recomputes the same root. The ``medfed dataset`` commands show,
publish and search through a real hub.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from medfed.node.manifest import file_manifest_root
from medfed.testing.federation import Federation

pytestmark = pytest.mark.e2e


def medfed(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medfed.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


def test_nodes_register_manifests_and_the_cli_publishes(gbsg2_federation: Federation) -> None:
    fed = gbsg2_federation
    datasets = fed.admin.datasets.list()
    assert len(datasets) == 3
    for dataset in datasets:
        path = fed.root / dataset.node_name / "data" / "gbsg2.csv"
        assert dataset.state == "released" and dataset.version == 1
        assert dataset.manifest_root == file_manifest_root(path)
    env = {"MEDFED_URL": fed.hub.url, "MEDFED_TOKEN": fed.admin.token or ""}
    first = datasets[0]
    shown = medfed("datasets", "show", str(first.id), env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"v1: RELEASED (pid mfd.{first.id})" in shown.stdout
    published = medfed("datasets", "publish", str(first.id), env=env)
    assert published.returncode == 0 and "PUBLISHED" in published.stdout
    found = medfed("datasets", "search", "--access-rights", "NON_PUBLIC", env=env)
    assert found.returncode == 0, found.stderr
    assert "3 dataset(s)" in found.stdout and "state: released (2), published (1)" in found.stdout
    again = medfed("datasets", "publish", str(first.id), env=env)
    assert again.returncode == 1 and "cannot publish" in again.stderr
    assert "Traceback" not in again.stderr
