"""The node's outbound connection to the hub (the only connection a node makes).

Every call retries while the hub cannot be reached (a restarting hub), with backoff up to
``max_backoff`` seconds, until the agent stops. HTTP errors are not retried: they are
answers (a stale lease gets 409 and the node drops that run).
"""

from __future__ import annotations

import threading
from typing import Any

import httpx

from medfed.common.errors import NotFound
from medfed.common.resources import (
    ConsistencyProof,
    DatasetRegister,
    HeartbeatAck,
    LedgerCheckpointPublic,
    LedgerKeys,
    NodeIdentity,
    RunAssignment,
)
from medfed.sdk.http import HubHTTP, HubUnreachable


class NodeHubClient:
    def __init__(
        self,
        url: str,
        secret: str,
        *,
        stop: threading.Event | None = None,
        max_backoff: float = 2.0,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._http = HubHTTP(url, secret, http_client=http_client, timeout=30.0)
        self._stop = stop or threading.Event()
        self._max_backoff = max_backoff

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        delay = 0.05
        while True:
            try:
                return self._http.request(method, path, **kwargs)
            except HubUnreachable:
                if self._stop.wait(delay):
                    raise
                delay = min(delay * 2, self._max_backoff)

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

    def post_outcome(self, run_id: int, body: bytes) -> None:
        """Post the outcome as exactly ``body`` (the bytes the node log hashed)."""
        self._call("POST", f"/api/node/runs/{run_id}/outcome", content=body)

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

    def close(self) -> None:
        self._http.close()
