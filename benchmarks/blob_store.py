"""Blob store throughput (issue 18, item 2): PostgreSQL chunks against files.

Run it as ``.venv/bin/python -m benchmarks.blob_store --database-url
postgresql+psycopg://postgres@127.0.0.1:5432/postgres`` (``--mib 64``, ``--repeat 3``).
How it runs: it creates a fresh database on that server (dropped afterwards), migrates
it as the hub does, and for each store — ``DatabaseBlobStore`` on that database and
``FileBlobStore`` in a temporary folder — streams ``--mib`` MiB of random bytes in 64 KiB
pieces (what an HTTP upload hands over), then streams it back chunk by chunk and checks
the SHA-256, ``--repeat`` times with new content. It prints MiB/s for write and read
(best of the repeats) and the process's peak RSS, which shows that neither direction
holds a blob whole.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import tempfile
import time
from pathlib import Path

from medfed.hub.db.migrate import upgrade
from medfed.hub.db.session import make_engine
from medfed.hub.services.learning.blob_database import DatabaseBlobStore
from medfed.hub.services.learning.blob_files import FileBlobStore
from medfed.hub.services.learning.blob_store import BlobStore
from medfed.testing.faults import pg_database

PIECE = 64 * 1024


def measure(store: BlobStore, mib: int, repeat: int) -> tuple[float, float]:
    """Best write and read throughput in MiB/s over ``repeat`` new contents."""
    best_write = best_read = 0.0
    for _ in range(repeat):
        piece = os.urandom(PIECE)
        started = time.perf_counter()
        writer = store.writer(max_bytes=mib * 2**20)
        for i in range(mib * 16):
            writer.write(piece[:8] + i.to_bytes(8, "big") + piece[16:])
        sha, _ = writer.finish()
        wrote = time.perf_counter() - started
        started = time.perf_counter()
        digest = hashlib.sha256()
        for chunk in store.chunks(sha):
            digest.update(chunk)
        read = time.perf_counter() - started
        assert digest.hexdigest() == sha
        best_write, best_read = max(best_write, mib / wrote), max(best_read, mib / read)
    return best_write, best_read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    with (
        pg_database(args.database_url, "medfed_blobbench_") as url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        engine = make_engine(url)
        upgrade(engine)
        try:
            for name, store in (
                ("database", DatabaseBlobStore(engine)),
                ("files", FileBlobStore(Path(tmp) / "blobs")),
            ):
                write, read = measure(store, args.mib, args.repeat)
                print(f"{name:9s} {args.mib} MiB: write {write:7.1f} MiB/s, read {read:7.1f} MiB/s")
        finally:
            engine.dispose()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MiB; load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
