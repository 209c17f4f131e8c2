"""The window arithmetic of query budgets (when the next request is possible)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from medfed.hub.services.access.budgets import shown, window_left


def test_the_next_request_is_possible_when_enough_of_the_oldest_leave_the_window() -> None:
    now = datetime(2025, 1, 1, 12, tzinfo=UTC)
    times = [now - timedelta(minutes=m) for m in (50, 40, 30)]
    assert window_left(times, 5, 1.0, now) == (2, None)
    assert window_left(times, 3, 1.0, now) == (0, times[0] + timedelta(hours=1))
    # a budget lowered below what was used: the next one waits for two to leave
    assert window_left(times, 2, 1.0, now) == (0, times[1] + timedelta(hours=1))
    assert window_left(times, 0, 1.0, now) == (0, None)


def test_a_reset_time_in_a_message_is_never_too_early() -> None:
    exact = datetime(2025, 1, 1, 12, 0, 5, tzinfo=UTC)
    assert shown(exact) == "2025-01-01T12:00:05+00:00"
    assert shown(exact.replace(microsecond=1)) == "2025-01-01T12:00:06+00:00"
