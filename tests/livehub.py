"""A test's hub app served over real HTTP on 127.0.0.1 (uvicorn in a thread), and a tiny
JWKS server (stdlib ``http.server`` in a thread) standing in for an external visa issuer.

Both bind a free port, wait (generously) until they answer, and stop on exit.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from medfed.testing.processes import free_port

__all__ = ["serve_app", "serve_json"]


@contextmanager
def serve_app(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"uvicorn did not start on {url}")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@contextmanager
def serve_json(documents: dict[str, Any]) -> Iterator[str]:
    """Serve each ``documents[path]`` as JSON at ``path``; yields the base URL.

    The dict is read at each request, so a test may change what is served.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path not in documents:
                self.send_error(404)
                return
            body = json.dumps(documents[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        httpx.get(url + "/", timeout=60)  # answers (404) once it serves
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=60)
