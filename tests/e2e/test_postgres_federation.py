"""The same federation with the hub on PostgreSQL (when ``MEDFED_TEST_DATABASE_URL`` is set).

One code path, two databases: the hub process runs on a fresh PostgreSQL database and the
federated results still equal the pooled ones; the audit log verifies.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from medfed.sdk import audit
from medfed.testing.demo import split_gbsg2
from medfed.testing.federation import Federation

URL = os.environ.get("MEDFED_TEST_DATABASE_URL")
pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    assert URL is not None
    server = sa.engine.make_url(URL)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    name = f"medfed_e2e_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


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
