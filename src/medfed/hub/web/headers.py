"""Security headers on every hub response (an ASGI middleware added by ``create_app``).

How it runs: :class:`SecurityHeaders` wraps ``send`` and adds, at the start of each HTTP
response, headers the route did not set itself:

- on every response: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and
  ``Referrer-Policy: same-origin`` (links to other sites carry no hub path);
- on HTML pages: :data:`PAGE_CSP`. The pages load their script (htmx, ``medfed.js``) and
  style sheet from ``/static`` only and use no inline script, handler or style (htmx's
  indicator style and eval are switched off in ``base.html``), so the policy allows
  exactly ``'self'``; result plots are PNGs served by the hub. ``frame-ancestors 'none'``
  says what ``X-Frame-Options`` says to newer browsers;
- on everything else (JSON, files): :data:`API_CSP`, which lets a response render nothing.

The interactive API docs (``/docs``, ``/redoc``) load Swagger UI and ReDoc from their CDN
with inline script; they keep their own page and get no CSP (the other headers apply).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["API_CSP", "PAGE_CSP", "SecurityHeaders"]

PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'"
ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
DOCS_PATHS = ("/docs", "/redoc")


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        docs = any(path == p or path.startswith(p + "/") for p in DOCS_PATHS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in ALWAYS.items():
                    headers.setdefault(name, value)
                if not docs:
                    html = headers.get("content-type", "").startswith("text/html")
                    headers.setdefault("Content-Security-Policy", PAGE_CSP if html else API_CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)
