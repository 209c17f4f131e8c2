"""Audit-log benchmark (issue 3): appends/s, proof size and full verification time.

Run: ``.venv/bin/python -m benchmarks.ledger [--appends 5000] [--entries 1000000]``.

1. Appends per second through the hub's own ``record()`` on a fresh, migrated database —
   SQLite (file, WAL, synchronous=FULL) and PostgreSQL (``MEDFED_BENCH_DATABASE_URL`` or
   the local server) — committing every append (each durable before it is acknowledged)
   and in transactions of 100 appends.
2. Inclusion proof size at ``--entries`` leaves (RFC 9162: ⌈log2 n⌉ hashes of 32 bytes).
3. Time to verify ``--entries`` entries from scratch (chain, tree, signed checkpoint).

Prints a table and writes ``benchmarks/results/ledger.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from medfed.hub.db.migrate import upgrade
from medfed.hub.db.session import make_engine, make_sessionmaker
from medfed.hub.services.ledger import record
from medfed.ledger.checkpoint import Checkpoint, new_key, public_b64
from medfed.ledger.entries import GENESIS_PREV, canonical, make_entry
from medfed.ledger.merkle import MemoryTree, inclusion_proof, leaf_hash
from medfed.ledger.verify import verify_log

RESULTS = Path(__file__).parent / "results" / "ledger.json"
PG_URL = os.environ.get(
    "MEDFED_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _appends(url: str, n: int, batch: int) -> float:
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    started = time.perf_counter()
    done = 0
    while done < n:
        with sessions() as session:
            for _ in range(min(batch, n - done)):
                record(
                    session,
                    action="run.finish",
                    actor="node:1",
                    objects={"run": done, "task": done // 3, "dataset": 1, "status": "done"},
                    hashes={"outcome": "ab" * 32},
                )
                done += 1
            session.commit()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return n / elapsed


def _postgres_database() -> tuple[str, str] | None:
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"medfed_bench_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no server: report and skip that backend
        print(f"PostgreSQL not reachable ({type(exc).__name__}); skipping it")
        return None
    finally:
        admin.dispose()
    return PG_URL.rsplit("/", 1)[0] + f"/{name}", name


def _drop_postgres(name: str) -> None:
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def append_rates(n: int) -> dict[str, float]:
    rates: dict[str, float] = {}
    for batch in (1, 100):
        with tempfile.TemporaryDirectory() as tmp:
            rates[f"sqlite_batch{batch}"] = _appends(f"sqlite:///{tmp}/bench.db", n, batch)
        pg = _postgres_database()
        if pg is not None:
            url, name = pg
            try:
                rates[f"postgres_batch{batch}"] = _appends(url, n, batch)
            finally:
                _drop_postgres(name)
    return rates


def synthetic_log(n: int) -> list[bytes]:
    bodies: list[bytes] = []
    prev = GENESIS_PREV
    for i in range(n):
        entry = make_entry(
            index=i,
            prev=prev,
            time="2026-11-23T03:46:06.123456+00:00",
            action="run.finish",
            actor="node:3",
            objects={"run": i, "task": i // 3, "dataset": 2, "status": "done", "output": "ok"},
            hashes={"outcome": "ab" * 32},
        )
        raw = canonical(entry)
        bodies.append(raw)
        prev = leaf_hash(raw).hex()
    return bodies


def verification(n: int) -> dict[str, Any]:
    bodies = synthetic_log(n)
    key = new_key()
    tree = MemoryTree(leaf_hash(b) for b in bodies)
    signed = Checkpoint("medfed-hub", n, tree.root().hex(), "now").signed(key)
    proof = inclusion_proof(tree, n // 2 + 1, n)
    started = time.perf_counter()
    report = verify_log(bodies, [signed], public_b64(key))
    seconds = time.perf_counter() - started
    assert report.ok, report.problems[:3]
    return {
        "entries": n,
        "proof_hashes": len(proof),
        "proof_bytes": sum(len(h) for h in proof),
        "verify_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--appends", type=int, default=5000)
    parser.add_argument("--entries", type=int, default=1_000_000)
    args = parser.parse_args()
    rates = append_rates(args.appends)
    verify = verification(args.entries)
    print(f"{'measure':40} {'value':>14}")
    for name, rate in rates.items():
        print(f"{'appends/s ' + name:40} {rate:14,.0f}")
    print(
        f"{'inclusion proof at ' + format(verify['entries'], ','):40} "
        f"{verify['proof_bytes']:>10} bytes ({verify['proof_hashes']} hashes)"
    )
    print(f"{'verify from scratch':40} {verify['verify_seconds']:>12.2f} s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": "python -m benchmarks.ledger "
                f"--appends {args.appends} --entries {args.entries}",
                "appends_per_second": rates,
                **verify,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "date": time.strftime("%Y-%m-%d"),
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
