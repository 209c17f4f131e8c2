"""A small local Zenodo: the deposit endpoints medfed uses, as a real HTTP server.

``with ZenodoServer(token="t") as zenodo:`` serves on 127.0.0.1 (a free port) from a
thread (``ThreadingHTTPServer``) until the block ends; ``zenodo.url`` is its base URL.
It keeps depositions in memory like Zenodo's legacy deposit API does:

* ``POST /api/deposit/depositions`` → 201, a draft (``state: unsubmitted``); with
  ``metadata.prereserve_doi`` it reserves ``10.5072/zenodo.<id>`` in ``metadata.prereserve_doi``;
* ``GET``/``PUT /api/deposit/depositions/{id}`` — read, set metadata (a published record
  only after ``actions/edit``);
* ``POST …/actions/publish`` → 202 (``submitted: true``, ``doi``), ``…/actions/edit`` and
  ``…/actions/discard`` → 201;
* ``DELETE /api/deposit/depositions/{id}`` → 204 for an unpublished draft, 403 once published.

Requests need ``Authorization: Bearer <token>`` (401 otherwise). ``zenodo.fail[(method,
action)] = status`` makes the next matching call fail with that status (``action`` is
``create``, ``update``, ``publish``, ``edit``, ``discard``, ``delete``), once.
``zenodo.calls`` lists ``(method, action, id)`` of every call, in order.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["ZenodoServer"]

_PATH = re.compile(r"^/api/deposit/depositions(?:/(\d+)(?:/actions/([a-z]+))?)?/?$")


class ZenodoServer:
    def __init__(self, token: str = "zenodo-test-token") -> None:
        self.token = token
        self.depositions: dict[int, dict[str, Any]] = {}
        self.fail: dict[tuple[str, str], int] = {}
        self.calls: list[tuple[str, str, int | None]] = []
        self._lock = threading.Lock()
        self._next = 1000
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> ZenodoServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ behaviour

    def handle(
        self, method: str, path: str, auth: str | None, body: Any
    ) -> tuple[int, dict[str, Any] | None]:
        if auth != f"Bearer {self.token}":
            return 401, {
                "status": 401,
                "message": "The server could not verify that you are authorized",
            }
        match = _PATH.match(path)
        if match is None:
            return 404, {"status": 404, "message": "not found"}
        dep_id = int(match.group(1)) if match.group(1) else None
        action = match.group(2) or {
            ("POST", False): "create",
            ("PUT", True): "update",
            ("GET", True): "get",
            ("DELETE", True): "delete",
        }.get((method, dep_id is not None), "unknown")
        with self._lock:
            self.calls.append((method, action, dep_id))
            failing = self.fail.pop((method, action), None)
            if failing is not None:
                return failing, {"status": failing, "message": "injected failure"}
            return self._apply(method, action, dep_id, body)

    def _apply(
        self, method: str, action: str, dep_id: int | None, body: Any
    ) -> tuple[int, dict[str, Any] | None]:
        if action == "create" and method == "POST":
            return 201, self._create(body)
        deposition = self.depositions.get(dep_id) if dep_id is not None else None
        if deposition is None:
            return 404, {"status": 404, "message": "PID does not exist."}
        if action == "get":
            return 200, deposition
        if action == "update":
            if deposition["submitted"] and deposition["state"] != "inprogress":
                return 400, {"status": 400, "message": "Deposition is published; edit it first"}
            metadata = dict((body or {}).get("metadata") or {})
            metadata["prereserve_doi"] = deposition["metadata"]["prereserve_doi"]
            deposition["metadata"] = metadata
            return 200, deposition
        if action == "publish" and method == "POST":
            if not deposition["metadata"].get("title"):
                return 400, {"status": 400, "message": "Validation error: title missing"}
            deposition["submitted"] = True
            deposition["state"] = "done"
            deposition["doi"] = deposition["metadata"]["prereserve_doi"]["doi"]
            deposition["record_id"] = deposition["id"]
            deposition["published_versions"] = deposition.get("published_versions", 0) + 1
            return 202, deposition
        if action == "edit" and method == "POST":
            deposition["state"] = "inprogress"
            deposition["before_edit"] = json.loads(json.dumps(deposition["metadata"]))
            return 201, deposition
        if action == "discard" and method == "POST":
            if "before_edit" in deposition:
                deposition["metadata"] = deposition.pop("before_edit")
            deposition["state"] = "done" if deposition["submitted"] else "unsubmitted"
            return 201, deposition
        if action == "delete":
            if deposition["submitted"]:
                return 403, {"status": 403, "message": "published depositions cannot be deleted"}
            del self.depositions[deposition["id"]]
            return 204, None
        return 405, {"status": 405, "message": "method not allowed"}

    def _create(self, body: Any) -> dict[str, Any]:
        self._next += 1
        dep_id = self._next
        metadata = dict((body or {}).get("metadata") or {})
        if metadata.pop("prereserve_doi", False):
            metadata["prereserve_doi"] = {"doi": f"10.5072/zenodo.{dep_id}", "recid": dep_id}
        deposition = {
            "id": dep_id,
            "state": "unsubmitted",
            "submitted": False,
            "metadata": metadata,
            "links": {"publish": f"{self.url}/api/deposit/depositions/{dep_id}/actions/publish"},
        }
        self.depositions[dep_id] = deposition
        return deposition

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                status, answer = server.handle(
                    method, self.path.split("?")[0], self.headers.get("Authorization"), body
                )
                data = json.dumps(answer).encode() if answer is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet: tests read ``calls``

        return Handler
