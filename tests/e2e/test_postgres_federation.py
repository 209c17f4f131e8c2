"""The same federation with the hub on PostgreSQL (when ``MEDFED_TEST_DATABASE_URL`` is set).

One code path, two databases: the hub process runs on a fresh PostgreSQL database and the
federated results still equal the pooled ones; the audit log verifies.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from medfed.sdk import audit
from medfed.testing.demo import split_gbsg2
from medfed.testing.faults import pg_database
from medfed.testing.federation import Federation

URL = os.environ.get("MEDFED_TEST_DATABASE_URL")
pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    assert URL is not None
    with pg_database(URL, "medfed_e2e_") as url:
        yield url


def test_a_federation_on_postgresql_gives_the_pooled_results(
    tmp_path: Path, gbsg2: pd.DataFrame, pg_url: str
) -> None:
    shares = {name: {"gbsg2": share} for name, share in split_gbsg2(gbsg2).items()}
    with Federation(tmp_path, shares, database_url=pg_url) as fed:
        client = fed.researcher
        assert client.tasks.run("count", datasets=["gbsg2"], progress=False).result.n == 686
        result = client.tasks.run(
            "variance", datasets=["gbsg2"], columns=["age", "time"], progress=False
        )
        for column in ("age", "time"):
            stats = result.result.columns[column]
            assert stats.mean == pytest.approx(gbsg2[column].mean(), rel=1e-9)
            assert stats.variance == pytest.approx(gbsg2[column].var(), rel=1e-9)
        report = audit.verify(client.ledger)
        assert report.ok, report.problems
