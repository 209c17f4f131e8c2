"""Time helpers: every timestamp medfed stores is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes; medfed stores UTC, so attach UTC to naive values."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
