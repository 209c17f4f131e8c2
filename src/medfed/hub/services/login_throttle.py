"""Login throttling per account and per client address (in memory, one per hub process).

Each failed login adds a timestamp under the account (``user:<name>``) and under the
address (``addr:<ip>``). Once a key holds ``max_failures`` failures within
``window_seconds``, every login for it is refused with
:class:`~medfed.common.errors.RateLimited` (429, ``Retry-After``) until the oldest of them
leaves the window — the right password included, so guessing gains nothing during a
lock-out. A successful login clears the account's failures (not the address's).

The counts live in this process's memory: a restart forgets them, and with several hub
workers each worker counts on its own (an attacker gets ``workers * max_failures`` tries
per window). That is the documented limit of this guard; a shared store would lift it.
The lock makes it safe for the thread pool that runs sync routes.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from datetime import timedelta

from medfed.common.errors import RateLimited
from medfed.common.timeutil import utcnow

__all__ = ["LoginThrottle"]

_MAX_KEYS = 100_000  # a flood of made-up names cannot grow memory without bound


class LoginThrottle:
    def __init__(self, *, max_failures: int, window_seconds: float) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _keys(username: str, address: str | None) -> list[str]:
        keys = [f"user:{username.strip().lower()[:200]}"]
        if address:
            keys.append(f"addr:{address}")
        return keys

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def check(self, username: str, address: str | None) -> None:
        """Refuse (429) when the account or the address is locked out."""
        now = time.monotonic()
        with self._lock:
            for key in self._keys(username, address):
                times = self._recent(key, now)
                if len(times) >= self.max_failures:
                    wait = times[0] + self.window - now
                    what = "account" if key.startswith("user:") else "address"
                    raise RateLimited(
                        f"too many failed logins for this {what}; try again later",
                        resets_at=utcnow() + timedelta(seconds=max(wait, 1.0)),
                    )

    def failed(self, username: str, address: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) >= _MAX_KEYS:
                for key in list(self._failures):
                    self._recent(key, now)
            for key in self._keys(username, address):
                if key in self._failures or len(self._failures) < _MAX_KEYS:
                    self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(self._keys(username, None)[0], None)
