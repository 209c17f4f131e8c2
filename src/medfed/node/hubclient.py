"""The node's outbound connection to the hub (the only connection a node makes).

The calls the agent cannot do without (identity, registration, polling, posting an outcome,
airlock events, the witness key) go through :meth:`NodeHubClient._call`, which retries every
transient hub error — cannot connect, connection reset, timed out, any 5xx (a JSON 503 with
``Retry-After`` during a database outage, a proxy's 502) and 429 — with capped exponential
backoff and full jitter (``min_backoff`` doubling up to ``max_backoff`` seconds; a
``Retry-After`` is honoured up to ``max_backoff``), for as long as it takes, until the agent
stops: then it raises :class:`~medfed.sdk.http.HubUnreachable`. A 4xx other than 429 is an
answer and is raised at once (a stale lease gets 409 and the node drops that result).
Periodic calls (heartbeat, witness checks) try once: their loops come round again anyway.
``verify`` is the node's TLS setting (``NodeConfig.tls_verify``): with ``hub_cert_sha256``
a :class:`~medfed.node.tlspin.PinnedContext`, whose mismatch error (495) is not transient.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
from typing import Any

import httpx

from medfed.common.errors import MedfedError, NotFound, RateLimited
from medfed.common.resources import (
    ConsistencyProof,
    DatasetRegister,
    HeartbeatAck,
    LedgerCheckpointPublic,
    LedgerKeys,
    NodeIdentity,
    RunAssignment,
)
from medfed.sdk.http import HubBusy, HubHTTP, HubUnreachable

log = logging.getLogger(__name__)


def transient(error: MedfedError) -> bool:
    """Whether ``error`` may pass by itself: unreachable, 5xx or 429 (never another 4xx)."""
    return isinstance(error, HubUnreachable | RateLimited) or error.status_code >= 500


class NodeHubClient:
    def __init__(
        self,
        url: str,
        secret: str,
        *,
        stop: threading.Event | None = None,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        http_client: httpx.Client | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.verify = verify
        self._http = HubHTTP(url, secret, http_client=http_client, timeout=30.0, verify=verify)
        self._stop = stop or threading.Event()
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff

    def backoff(self, attempt: int, error: MedfedError) -> float:
        """Seconds before retry ``attempt`` (0-based): capped, jittered, ``Retry-After``."""
        cap = min(self._min_backoff * 2.0**attempt, self._max_backoff)
        wait = cap / 2 + random.random() * cap / 2  # jitter: nodes never retry in step
        if isinstance(error, HubBusy) and error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self._max_backoff))
        return wait

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                return self._http.request(method, path, **kwargs)
            except MedfedError as exc:
                if not transient(exc):
                    raise
                wait = self.backoff(attempt, exc)
                if attempt in (0, 5) or attempt % 20 == 0:  # a few lines, not one per try
                    log.warning(
                        "%s %s: %s; retrying in %.1f s (try %d)",
                        method,
                        path,
                        exc.message,
                        wait,
                        attempt + 1,
                    )
                if self._stop.wait(wait):
                    if isinstance(exc, HubUnreachable):
                        raise
                    raise HubUnreachable(f"stopped while retrying: {exc.message}") from None
                attempt += 1

    def me(self) -> NodeIdentity:
        return NodeIdentity.model_validate(self._call("GET", "/api/node/me"))

    def register_dataset(self, data: DatasetRegister) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", "/api/node/datasets", json=data.model_dump(mode="json")
        )
        return result

    def next_run(self, wait: float) -> RunAssignment | None:
        data = self._call("GET", "/api/node/runs/next", params={"wait": wait}, timeout=wait + 15.0)
        return None if data is None else RunAssignment.model_validate(data)

    def post_outcome(
        self, run_id: int, body: bytes, *, take_next: bool = False
    ) -> RunAssignment | None:
        """Post the outcome as exactly ``body`` (the bytes the node log hashed); with
        ``take_next``, the next run the hub handed out with its answer (None: none)."""
        data = self._call(
            "POST",
            f"/api/node/runs/{run_id}/outcome",
            content=body,
            params={"next": "true"} if take_next else None,
        )
        handed = data.get("next") if isinstance(data, dict) else None
        return RunAssignment.model_validate(handed) if handed is not None else None

    def airlock_event(self, run_id: int, event: str, outputs_sha256: str) -> None:
        """Have the hub's ledger record an airlock event on a run this node holds."""
        body = {"event": event, "outputs_sha256": outputs_sha256}
        self._call("POST", f"/api/node/runs/{run_id}/airlock", json=body)

    def heartbeat(self, run_ids: list[int]) -> HeartbeatAck:
        data = self._http.request("POST", "/api/node/heartbeat", json={"run_ids": run_ids})
        return HeartbeatAck.model_validate(data)

    def ledger_keys(self) -> LedgerKeys:
        return LedgerKeys.model_validate(self._http.request("GET", "/api/ledger/keys"))

    def latest_checkpoint(self) -> LedgerCheckpointPublic | None:
        try:
            data = self._http.request("GET", "/api/ledger/checkpoint")
        except NotFound:
            return None
        return LedgerCheckpointPublic.model_validate(data)

    def consistency(self, first: int, second: int) -> list[str]:
        data = self._http.request(
            "GET", "/api/ledger/proof/consistency", params={"first": first, "second": second}
        )
        return ConsistencyProof.model_validate(data).proof

    def register_witness_key(self, public_key: str) -> None:
        self._call("POST", "/api/node/ledger/key", json={"public_key": public_key})

    def cosign(self, size: int, signature: str) -> None:
        self._http.request(
            "POST", "/api/node/ledger/cosign", json={"size": size, "signature": signature}
        )

    def ledger_fact(self, kind: str, digest: str) -> None:
        """Put a keyed hash of node state (the opt-out register) in the hub's audit log."""
        self._call("POST", "/api/node/ledger/fact", json={"kind": kind, "hash": digest})

    def close(self) -> None:
        self._http.close()
