"""The blob store's contract, the same tests on both of the hub's databases.

SQLite always, PostgreSQL when ``MEDFED_TEST_DATABASE_URL`` names a server, each with the
store the hub picks there: files under its data folder on SQLite, ``blob_contents`` and
``blob_chunks`` rows on PostgreSQL (the database store is refused on SQLite: its writes
would queue behind the hub's own write lock). The chunk size is cut to 1 KiB so that a
few KiB span several chunks. A blob written as a stream reads back whole and as a
stream; it is invisible until finished; an aborted, oversized or misnamed upload leaves
nothing; the same content twice is one blob; nodes fetch only initial and global weights.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from medfed.common.errors import BadRequest, Forbidden, NotFound
from medfed.common.timeutil import utcnow
from medfed.hub.config import HubSettings
from medfed.hub.db.models_fl import BlobChunk, BlobContent
from medfed.hub.services.learning import blob_database, blobs
from medfed.hub.services.learning.blob_database import DatabaseBlobStore
from medfed.hub.services.learning.blob_files import FileBlobStore
from medfed.hub.services.learning.blob_store import BlobStore

CHUNK = 1024
DATA = bytes(range(256)) * 13 + b"tail"  # 3332 bytes: three full chunks and a part
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(hub_app: FastAPI) -> BlobStore:
    """The store the hub picks: files on SQLite, the database's chunks on PostgreSQL."""
    made = blobs.store_for(hub_app.state.settings)
    made.chunk_bytes = CHUNK
    return made


def contents(store: BlobStore) -> list[str | None]:
    """Everything the store keeps: file names, or content rows (None: an unnamed upload)."""
    if isinstance(store, FileBlobStore):
        return sorted(p.name for p in store.root.rglob("*") if p.is_file())
    assert isinstance(store, DatabaseBlobStore)
    with store.engine.connect() as conn:
        rows = [r for r in conn.scalars(sa.select(BlobContent.sha256))]
        chunk_owners = set(conn.scalars(sa.select(BlobChunk.content_id)))
        owners = set(conn.scalars(sa.select(BlobContent.id)))
    assert chunk_owners <= owners  # no chunk without its content
    return sorted(rows, key=str)


def test_a_streamed_blob_reads_back_whole_and_as_a_stream(store: BlobStore) -> None:
    writer = store.writer(max_bytes=len(DATA))
    for start in range(0, len(DATA), 700):  # pieces that straddle the chunk edges
        writer.write(DATA[start : start + 700])
    assert writer.finish(SHA) == (SHA, len(DATA))
    assert store.exists(SHA) and store.size(SHA) == len(DATA)
    assert store.read(SHA) == DATA
    streamed = list(store.chunks(SHA))
    assert b"".join(streamed) == DATA and len(streamed) == 4
    assert max(len(c) for c in streamed) <= CHUNK
    empty = store.write_bytes(b"")
    assert store.read(empty) == b"" and store.size(empty) == 0
    assert store.write_bytes(DATA[:10]) == hashlib.sha256(DATA[:10]).hexdigest()


def test_a_blob_is_invisible_until_it_is_finished(store: BlobStore) -> None:
    writer = store.writer(max_bytes=len(DATA))
    writer.write(DATA[:3000])  # two chunks stored already in the database
    assert not store.exists(SHA)
    with pytest.raises(NotFound):
        store.read(SHA)
    writer.write(DATA[3000:])
    writer.finish()
    assert store.read(SHA) == DATA


def test_writing_the_same_content_twice_is_harmless(store: BlobStore) -> None:
    first, second = store.writer(len(DATA)), store.writer(len(DATA))
    first.write(DATA[:2048])
    second.write(DATA[:2048])
    first.write(DATA[2048:])
    second.write(DATA[2048:])
    assert first.finish(SHA) == second.finish(SHA) == (SHA, len(DATA))
    assert store.write_bytes(DATA) == SHA
    assert contents(store) == [SHA]
    assert store.read(SHA) == DATA


def test_aborted_oversized_and_misnamed_uploads_leave_nothing(store: BlobStore) -> None:
    aborted = store.writer(len(DATA))
    aborted.write(DATA[:2500])
    aborted.abort()
    aborted.abort()  # twice is fine
    too_big = store.writer(max_bytes=2000)
    too_big.write(DATA[:1500])
    with pytest.raises(BadRequest, match="larger than the hub's limit of 2000 bytes"):
        too_big.write(DATA[1500:2500])
    misnamed = store.writer(len(DATA))
    misnamed.write(DATA)
    with pytest.raises(BadRequest, match=f"hashes to {SHA}, not the {'0' * 64}"):
        misnamed.finish("0" * 64)
    assert contents(store) == []
    assert not store.exists(SHA)


def test_missing_blobs_and_bad_names_are_refused(store: BlobStore) -> None:
    for call in (store.read, store.size, store.chunks):
        with pytest.raises(NotFound, match=f"blob {SHA} not found"):
            call(SHA)
    with pytest.raises(BadRequest, match="is not a SHA-256 hex digest"):
        store.exists("../../etc/passwd")


def test_nodes_fetch_initial_and_global_weights_only(store: BlobStore, hub_app: FastAPI) -> None:
    update = store.write_bytes(b"an update")
    initial = store.write_bytes(b"initial weights")
    with hub_app.state.sessionmaker() as session:
        blobs.register(session, sha256=update, size=9, kind="update")
        blobs.register(session, sha256=initial, size=15, kind="initial")
        blobs.register(session, sha256=initial, size=15, kind="update")  # the first wins
        session.commit()
        blobs.require_node_readable(session, store, initial)
        with pytest.raises(Forbidden, match="is a update blob; nodes fetch weights only"):
            blobs.require_node_readable(session, store, update)
        with pytest.raises(NotFound):
            blobs.require_node_readable(session, store, SHA)  # neither row nor bytes


def test_the_hub_keeps_blobs_in_postgresql_and_in_files_on_sqlite(
    hub_settings: HubSettings, hub_app: FastAPI
) -> None:
    chosen = blobs.store_for(hub_settings)
    if hub_settings.effective_database_url.startswith("sqlite"):
        assert isinstance(chosen, FileBlobStore)
        assert chosen.root == hub_settings.data_dir / "blobs"
        with pytest.raises(ValueError, match="blob_store = 'database' needs a PostgreSQL"):
            HubSettings(**{**hub_settings.model_dump(), "blob_store": "database"})
    else:
        assert isinstance(chosen, DatabaseBlobStore)
        assert chosen.engine is hub_app.state.engine  # the app's pool, closed with it
        files = HubSettings(**{**hub_settings.model_dump(), "blob_store": "files"})
        assert isinstance(blobs.store_for(files), FileBlobStore)


def test_an_upload_cut_off_a_day_ago_is_deleted_by_the_next_writer(store: BlobStore) -> None:
    if not isinstance(store, DatabaseBlobStore):
        pytest.skip("files: a crashed upload leaves a file in blobs/tmp (see docs)")
    cut_off, recent = store.writer(len(DATA)), store.writer(len(DATA))
    cut_off.write(DATA[:2048])  # a hub that died here never aborts
    recent.write(DATA[:2048])
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(BlobContent)
            .values(created_at=utcnow() - blob_database.ABANDONED_AFTER - timedelta(hours=1))
            .where(BlobContent.id == cut_off._content_id)  # type: ignore[attr-defined]
        )
    blob_database._last_sweep.clear()  # this process swept when the writers began
    store.writer(10).abort()
    assert contents(store) == [None]  # the recent upload stays
    recent.write(DATA[2048:])
    recent.finish(SHA)
    assert contents(store) == [SHA] and store.read(SHA) == DATA
