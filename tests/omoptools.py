"""OMOP test helpers shared by the cohort tests, at two levels.

* :func:`halves` and :func:`omop_federation` — real processes: each node's OMOP CDM is a
  share of lifelines' GBSG2 loaded through the shipped mapping
  (``examples/omop/gbsg2.toml``) into ``data/cdm.duckdb`` and declared in its node.toml as
  ``[[omop]]`` named ``cdm``; the context manager starts the hub and the nodes, waits (with
  minutes of headroom) until every node has registered its CDM, releases the datasets and
  grants the researcher's project access (tests/e2e/test_cohorts_e2e.py,
  tests/web/test_browser_cohorts.py);
* :func:`omop_datasets` — the in-process hub of :mod:`hubtools`: node-a and node-b each
  register an OMOP CDM ``cdm`` through the node API, the admin releases it and grants it
  to the world's project (tests/api/test_cohorts.py, tests/web/test_cohort_pages.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from hubtools import World, _ok, bearer, grant_access
from medfed.node.omop_load import load_mapping, load_table
from medfed.testing.federation import Federation

MAPPING = Path(__file__).resolve().parents[1] / "examples" / "omop" / "gbsg2.toml"
#: what each node's node.toml adds: its CDM as the OMOP dataset "cdm"
OMOP_POLICY = '\n[[omop]]\nname = "cdm"\nduckdb = "data/cdm.duckdb"\n'
OMOP_COLUMNS = [
    {"name": "person.person_id", "type": "integer"},
    {"name": "person.year_of_birth", "type": "integer"},
]
REGISTERED_WITHIN_S = 180


def halves(gbsg2: pd.DataFrame) -> list[pd.DataFrame]:
    """GBSG2's even and odd rows."""
    return [gbsg2.iloc[i::2].reset_index(drop=True) for i in (0, 1)]


@contextmanager
def omop_federation(
    root: Path, shares: Mapping[str, pd.DataFrame], *, min_cell_count: int
) -> Iterator[Federation]:
    """A hub and one node per share (by name), each serving its share as the CDM ``cdm``."""
    mapping = load_mapping(MAPPING)
    for name, share in shares.items():
        (root / name / "data").mkdir(parents=True)
        load_table(mapping=mapping, table=share, cdm=root / name / "data" / "cdm.duckdb")
    fed = Federation(
        root,
        {name: {} for name in shares},
        min_cell_count=min_cell_count,
        grant_access=False,
        extra_policy=OMOP_POLICY,
    )
    with fed:
        deadline = time.monotonic() + REGISTERED_WITHIN_S
        while len(fed.admin.datasets.list()) < len(shares):
            assert time.monotonic() < deadline, "the OMOP datasets were not registered"
            time.sleep(0.2)
        for registered in fed.admin.datasets.list():
            fed.admin.catalogue.release(registered.id)
        fed.grant_all_access()
        yield fed


def omop_datasets(world: World) -> list[int]:
    """Each node registers an OMOP CDM 'cdm' (340 persons); released and granted to the project."""
    ids = []
    for node in (world.node_a, world.node_b):
        body = {
            "name": "cdm",
            "columns": OMOP_COLUMNS,
            "row_count": 340,
            "summary": {
                "omop": {
                    "cdm_version": "5.4",
                    "vocabulary_version": "v",
                    "tables": {"person": 340},
                }
            },
        }
        found = _ok(world.api.post("/api/node/datasets", json=body, headers=node.headers), 200)
        _ok(
            world.api.post(f"/api/datasets/{found['id']}/release", headers=world.admin.headers), 200
        )
        ids.append(found["id"])
    for one in ids:  # one application per holding organization
        grant_access(
            world.api, bearer(world.admin.token), world.researcher, world.project_id, [one]
        )
    return ids
