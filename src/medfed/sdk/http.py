"""One HTTP session to the hub: bearer auth, JSON in and out, errors mapped to classes.

A 4xx answer becomes the :mod:`medfed.common.errors` class for its status with the hub's
message; a hub that cannot be reached becomes :class:`HubUnreachable`, a 503 (the hub's
database unavailable for a moment) :class:`HubBusy`, its subclass. A 429 (a query budget
used up) becomes :class:`~medfed.common.errors.RateLimited` with ``resets_at``.
Idempotent requests are retried with capped backoff when ``retries`` > 0 (the SDK's
``Client`` sets it; the node's client runs its own retry loop). A POST sent with an
``idempotency_key`` counts as idempotent: the hub answers a repeat with the same key and
body with what the first created (``POST /api/tasks``), so it is retried like a GET —
with the same key on every try — for up to ``retry_seconds``, long enough to ride out a
hub restart.
"""

from __future__ import annotations

import random
import ssl
import time
from datetime import datetime
from typing import Any

import httpx

from medfed.common.errors import ERRORS_BY_STATUS, MedfedError, RateLimited


class HubUnreachable(MedfedError):
    """The hub cannot be reached (connection refused, reset, timed out)."""

    status_code = 503


class HubBusy(HubUnreachable):
    """The hub answered 503 (its database is unavailable for a moment).

    ``retry_after`` is the hub's ``Retry-After`` in seconds (None when it sent none).
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


#: methods that may be sent again without changing the outcome
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class HubHTTP:
    """Requests to one hub; idempotent ones are retried ``retries`` times when it is down.

    A retry follows a connection error or a 503 after a capped exponential backoff
    (``backoff`` seconds doubling up to ``max_backoff``, with jitter; a 503's
    ``Retry-After`` is honoured up to ``max_backoff``). POST and PATCH are never resent
    here unless the caller gives an ``idempotency_key`` (sent as ``Idempotency-Key``):
    such a request is retried, with the same key, until ``retry_seconds`` have passed
    (at least ``retries`` times).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        http_client: httpx.Client | None = None,
        timeout: float = 30.0,
        retries: int = 0,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        retry_seconds: float = 0.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self._client = http_client or httpx.Client(
            base_url=self.url, timeout=timeout, verify=verify
        )
        self._own_client = http_client is None
        self.token = token
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.retry_seconds = retry_seconds

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def delay(self, attempt: int, error: HubUnreachable) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based) after ``error``."""
        wait = min(self.backoff * 2.0**attempt, self.max_backoff)
        wait *= 0.5 + random.random() / 2  # jitter: many clients never retry in step
        if isinstance(error, HubBusy) and error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self.max_backoff))
        return wait

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        keyed = idempotency_key is not None
        tries = self.retries + 1 if keyed or method.upper() in IDEMPOTENT else 1
        until = time.monotonic() + self.retry_seconds if keyed else 0.0
        attempt = 0
        while True:
            try:
                return self._once(
                    method,
                    path,
                    json=json,
                    content=content,
                    params=params,
                    timeout=timeout,
                    idempotency_key=idempotency_key,
                )
            except HubUnreachable as exc:
                wait = self.delay(attempt, exc)
                attempt += 1
                if attempt >= tries and time.monotonic() + wait > until:
                    if attempt > 1:
                        exc.message = f"{exc.message} (tried {attempt} times)"
                        exc.args = (exc.message,)
                    raise
                time.sleep(wait)

    def _once(
        self,
        method: str,
        path: str,
        *,
        json: Any,
        content: bytes | None,
        params: dict[str, Any] | None,
        timeout: float | None,
        idempotency_key: str | None = None,
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        try:
            kwargs: dict[str, Any] = {"json": json, "params": params, "headers": headers}
            if content is not None:
                kwargs["content"] = content
                headers["Content-Type"] = "application/json"
            if timeout is not None:
                kwargs["timeout"] = timeout
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise HubUnreachable(f"cannot reach the hub at {self.url}: {exc}") from None
        if response.status_code == 204:
            return None
        if response.status_code >= 400:
            raise _error(response)
        return response.json()


def _error(response: httpx.Response) -> MedfedError:
    body: Any = None
    try:
        body = response.json()
        detail = body.get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    if not isinstance(detail, str):
        detail = str(detail)
    if response.status_code == 503:
        return HubBusy(
            f"the hub is unavailable for a moment: {detail or 'HTTP 503'}",
            retry_after=_seconds(response.headers.get("Retry-After")),
        )
    cls = ERRORS_BY_STATUS.get(response.status_code, MedfedError)
    error = cls(detail or f"HTTP {response.status_code}")
    error.status_code = response.status_code
    if isinstance(error, RateLimited) and isinstance(body, dict):
        error.resets_at = _when(body.get("resets_at"))
    return error


def _when(value: Any) -> datetime | None:
    """The ``resets_at`` of a 429 answer as an aware datetime (None if absent or odd)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` given in seconds (an HTTP date is not used by the hub)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
