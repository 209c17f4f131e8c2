"""The node's patient opt-out register, applied by the stores to every read.

How it runs:

* The register is a small SQLite file in the node's data dir (``optout.sqlite3``, mode
  0600) holding *events*: one row per decision ``(person, at, decision, source, ref)``
  where ``decision`` is ``deny`` (opted out of research) or ``permit`` (opt-out withdrawn).
  A person is opted out when their latest event (by time, then by insertion) is ``deny``.
  ``medfed node optout add`` writes a ``deny`` now, ``remove`` a ``permit`` now, and
  ``import-fhir`` one event per FHIR ``Consent`` (:mod:`medfed.node.ingest.fhir.consent`)
  at the Consent's own time, so a ``permit`` dated after a ``deny`` ends the opt-out.
  Importing the same Consent twice changes nothing (its ``ref`` is unique).
* Persons are text: an OMOP ``person_id`` (digits), the value of a table dataset's
  ``person_column``, or the node's patient pseudonym (``P`` + 16 hex,
  :func:`medfed.node.ingest.keys.patient_pseudonym`), which is how FHIR Consents are kept:
  the register never stores a hospital identifier.
* :meth:`OptOutRegister.excluded` answers the current set, re-read only when the file
  changed (its size, mtime and inode), so every query of a store sees a change made by the
  steward's CLI in another process before the node's next run, without a restart.
* :meth:`OptOutRegister.digest` is an HMAC-SHA256, keyed from the node secret, over the
  sorted opted-out persons: the ledger gets it, and nobody without the secret can test a
  guessed list against it. The number of persons is shown only by ``optout status`` on the
  node's machine; it is never sent, logged to the hub or put in an error.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import sqlite3
import threading
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from medfed.common.errors import BadRequest
from medfed.common.timeutil import utcnow

__all__ = [
    "ConsentEvent",
    "OptOutRegister",
    "RegisterStatus",
    "person_key",
    "register_path",
    "sticky_count",
]

Decision = Literal["deny", "permit"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    person TEXT NOT NULL,
    at TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('deny', 'permit')),
    source TEXT NOT NULL,
    ref TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS events_person ON events (person, at, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

#: the latest event per person; the opted-out are those whose latest is a deny
_CURRENT = """
SELECT person FROM (
    SELECT person, decision,
           row_number() OVER (PARTITION BY person ORDER BY at DESC, seq DESC) AS rank
    FROM events
) WHERE rank = 1 AND decision = 'deny' ORDER BY person
"""


def register_path(data_dir: Path) -> Path:
    """Where a node keeps its register."""
    return data_dir / "optout.sqlite3"


def person_key(value: Any) -> str | None:
    """The register's text for a person value: ``12`` for 12, 12.0 and ``" 12 "``."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
        return repr(value)
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return person_key(value.item())  # numpy scalars
    text = str(value).strip()
    return text or None


@dataclass(frozen=True)
class ConsentEvent:
    """One decision about one person, as read from a FHIR Consent or typed by a steward."""

    person: str
    at: datetime
    decision: Decision
    ref: str | None = None


@dataclass(frozen=True)
class RegisterStatus:
    """What ``medfed node optout status`` shows on the node's machine (never sent)."""

    opted_out: int
    events: int
    from_fhir: int
    last_reconciled: str | None
    digest: str


class OptOutRegister:
    """The durable register of one node (thread-safe; other processes may write too)."""

    def __init__(self, path: Path, *, secret: str) -> None:
        if not secret:
            raise BadRequest("opt-out register: the node secret is needed to key its hash")
        self.path = path
        self._key = hmac.new(secret.encode(), b"medfed opt-out register", hashlib.sha256).digest()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._current: frozenset[str] = frozenset()

    # -- storage -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        os.chmod(self.path, 0o600)
        con = sqlite3.connect(self.path, timeout=30.0)
        con.executescript(_SCHEMA)
        return con

    def _write(self, events: Iterable[ConsentEvent], source: str) -> int:
        """Insert events (a known ``ref`` is skipped); returns how many were new."""
        rows = [
            (_person(e.person), e.at.isoformat(), e.decision, source, e.ref)
            for e in events
            if e.decision in ("deny", "permit")
        ]
        with self._lock, closing(self._connect()) as con, con:
            before = con.total_changes
            con.executemany(
                "INSERT OR IGNORE INTO events (person, at, decision, source, ref) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            added = con.total_changes - before
            con.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_reconciled', ?)",
                (utcnow().isoformat(),),
            )
        return added

    def add(self, persons: Iterable[Any], *, at: datetime | None = None) -> int:
        """Opt ``persons`` out (a steward's entry); returns the number of events written."""
        when = at or utcnow()
        return self._write(
            [ConsentEvent(person_key(p) or "", when, "deny") for p in persons], "manual"
        )

    def remove(self, persons: Iterable[Any], *, at: datetime | None = None) -> int:
        """Withdraw the opt-out of ``persons`` (a later FHIR deny opts them out again)."""
        when = at or utcnow()
        return self._write(
            [ConsentEvent(person_key(p) or "", when, "permit") for p in persons], "manual"
        )

    def import_events(self, events: Iterable[ConsentEvent]) -> int:
        """Record decisions read from FHIR Consents; returns how many were new."""
        return self._write(events, "fhir")

    # -- reading -------------------------------------------------------------------------

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def excluded(self) -> frozenset[str]:
        """The persons opted out now (re-read when the file changed; the same object else)."""
        stamp = self._file_stamp()
        with self._lock:
            if stamp == self._stamp:
                return self._current
            if stamp is None:
                current: frozenset[str] = frozenset()
            else:
                with closing(sqlite3.connect(self.path, timeout=30.0)) as con:
                    con.executescript(_SCHEMA)
                    current = frozenset(row[0] for row in con.execute(_CURRENT))
            if current != self._current:
                self._current = current
            self._stamp = stamp
            return self._current

    def excluded_person_ids(self, resolve: dict[str, int] | None = None) -> set[int]:
        """Opted-out OMOP ``person_id`` values: digits as they are, pseudonyms via ``resolve``."""
        ids: set[int] = set()
        for person in self.excluded():
            if person.lstrip("-").isdigit():
                ids.add(int(person))
            elif resolve is not None and person in resolve:
                ids.add(resolve[person])
        return ids

    def digest(self) -> str:
        """HMAC-SHA256 (key from the node secret) over the sorted opted-out persons."""
        body = "\n".join(sorted(self.excluded())).encode()
        return hmac.new(self._key, body, hashlib.sha256).hexdigest()

    def last_reconciled(self) -> str | None:
        if not self.path.exists():
            return None
        with closing(sqlite3.connect(self.path, timeout=30.0)) as con:
            con.executescript(_SCHEMA)
            row = con.execute("SELECT value FROM meta WHERE key = 'last_reconciled'").fetchone()
        return str(row[0]) if row else None

    def previous_count(self, dataset: str) -> int | None:
        """The row count this node last registered for ``dataset`` (see :func:`sticky_count`)."""
        if not self.path.exists():
            return None
        with closing(sqlite3.connect(self.path, timeout=30.0)) as con:
            con.executescript(_SCHEMA)
            row = con.execute(
                "SELECT value FROM meta WHERE key = ?", (f"registered_count:{dataset}",)
            ).fetchone()
        return int(row[0]) if row else None

    def remember_count(self, dataset: str, count: int | None) -> None:
        if count is None:
            return
        with self._lock, closing(self._connect()) as con, con:
            con.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (f"registered_count:{dataset}", str(count)),
            )

    def status(self) -> RegisterStatus:
        """Counts and times for the steward, on the node's machine only."""
        events = fhir = 0
        if self.path.exists():
            with closing(sqlite3.connect(self.path, timeout=30.0)) as con:
                con.executescript(_SCHEMA)
                events = int(con.execute("SELECT count(*) FROM events").fetchone()[0])
                fhir = int(
                    con.execute("SELECT count(*) FROM events WHERE source = 'fhir'").fetchone()[0]
                )
        return RegisterStatus(
            opted_out=len(self.excluded()),
            events=events,
            from_fhir=fhir,
            last_reconciled=self.last_reconciled(),
            digest=self.digest(),
        )


def _person(value: str) -> str:
    key = person_key(value)
    if key is None or len(key) > 200:
        raise BadRequest("opt-out register: a person id must be 1-200 characters")
    return key


def sticky_count(visible: int, previous: int | None, threshold: int) -> int | None:
    """The row count a node registers: rounded, and kept while within one rounding step.

    Rounding alone flips at a boundary when a few persons opt out (``105`` → ``110`` but
    ``104`` → ``100``), which would tell the hub a small change. The previous registered
    value stays while the visible count is within ``threshold`` of it, so the count moves
    only when the data changed by more than the rounding hides.
    """
    if visible < threshold:
        return None
    rounded = int(math.floor(visible / threshold + 0.5) * threshold)
    if previous is not None and abs(visible - previous) <= threshold:
        return previous
    return rounded
