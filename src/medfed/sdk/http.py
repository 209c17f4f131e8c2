"""One HTTP session to the hub: bearer auth, JSON in and out, errors mapped to classes.

A 4xx answer becomes the :mod:`medfed.common.errors` class for its status with the hub's
message; a hub that cannot be reached becomes :class:`HubUnreachable`. A 429 (a query
budget used up) becomes :class:`~medfed.common.errors.RateLimited` with ``resets_at``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from medfed.common.errors import ERRORS_BY_STATUS, MedfedError, RateLimited


class HubUnreachable(MedfedError):
    status_code = 503


class HubHTTP:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        http_client: httpx.Client | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._client = http_client or httpx.Client(base_url=self.url, timeout=timeout)
        self._own_client = http_client is None
        self.token = token

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
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
