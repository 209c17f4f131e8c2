"""Fixtures for end-to-end tests: hub and nodes as real processes on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from medfed.testing.demo import load_gbsg2, split_gbsg2
from medfed.testing.federation import Federation

# the PostgreSQL federation runs only where a server is named (never as a skipped test)
collect_ignore = (
    [] if os.environ.get("MEDFED_TEST_DATABASE_URL") else ["test_postgres_federation.py"]
)


@pytest.fixture(scope="session")
def gbsg2() -> pd.DataFrame:
    return load_gbsg2()


@pytest.fixture(scope="module")
def gbsg2_federation(
    tmp_path_factory: pytest.TempPathFactory, gbsg2: pd.DataFrame
) -> Iterator[Federation]:
    """Three hospitals, each with its GBSG2 share as dataset ``gbsg2``; default gate (5)."""
    root: Path = tmp_path_factory.mktemp("federation")
    shares = {name: {"gbsg2": share} for name, share in split_gbsg2(gbsg2).items()}
    with Federation(root, shares) as federation:
        yield federation


@pytest.fixture
def fresh_gbsg2_federation(tmp_path: Path, gbsg2: pd.DataFrame) -> Iterator[Federation]:
    """The same three hospitals, new for one test: nothing released yet from their rows.

    For tests whose grids or subsets would cross those of earlier tests: the nodes' row-set
    memory (``medfed.node.gate.rowsets``) would rightly withhold them.
    """
    shares = {name: {"gbsg2": share} for name, share in split_gbsg2(gbsg2).items()}
    with Federation(tmp_path / "federation", shares) as federation:
        yield federation
