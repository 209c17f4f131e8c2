"""The window arithmetic of query budgets (when the next request is possible), and the
same counted in the database (``counted_window``: a count and at most one row read)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from medfed.hub.services.access.budgets import counted_window, shown, window_left


def test_the_next_request_is_possible_when_enough_of_the_oldest_leave_the_window() -> None:
    now = datetime(2025, 1, 1, 12, tzinfo=UTC)
    times = [now - timedelta(minutes=m) for m in (50, 40, 30)]
    asked: list[int] = []

    def nth(index: int) -> datetime:
        asked.append(index)
        return times[index]

    assert window_left(3, 5, 1.0, nth) == (2, None)
    assert asked == []  # requests left: no time is read
    assert window_left(3, 3, 1.0, nth) == (0, times[0] + timedelta(hours=1))
    # a budget lowered below what was used: the next one waits for two to leave
    assert window_left(3, 2, 1.0, nth) == (0, times[1] + timedelta(hours=1))
    assert window_left(3, 0, 1.0, nth) == (0, None)
    assert asked == [0, 1]


def test_counted_in_the_database_with_one_row_read(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    meta = sa.MetaData()
    table = sa.Table("t", meta, sa.Column("at", sa.DateTime(timezone=True)))
    meta.create_all(engine)
    now = datetime(2025, 1, 1, 12, tzinfo=UTC)
    times = [now - timedelta(minutes=m) for m in (70, 50, 40, 30)]  # one outside the hour
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"at": t} for t in times])
    rows_read: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: rows_read.append(str(a[2])))
    query = sa.select(table.c.at).where(table.c.at > now - timedelta(hours=1)).order_by(table.c.at)
    with sa.orm.Session(engine) as session:
        assert counted_window(session, query, 5, 1.0) == (3, 2, None)
        assert len(rows_read) == 1 and "count(*)" in rows_read[0]
        used, left, resets = counted_window(session, query, 2, 1.0)
    assert (used, left) == (3, 0)
    assert resets is not None
    assert resets.replace(tzinfo=UTC) == times[2] + timedelta(hours=1)
    assert "LIMIT" in rows_read[-1] and "OFFSET" in rows_read[-1]


def test_a_reset_time_in_a_message_is_never_too_early() -> None:
    exact = datetime(2025, 1, 1, 12, 0, 5, tzinfo=UTC)
    assert shown(exact) == "2025-01-01T12:00:05+00:00"
    assert shown(exact.replace(microsecond=1)) == "2025-01-01T12:00:06+00:00"
