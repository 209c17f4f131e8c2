"""The hub's edge: body-size limits and input checks before any route runs (ASGI middleware).

:class:`EdgeMiddleware` wraps the whole app. For each HTTP request it

1. refuses a path or query string holding a control character (NUL, C0 except tab,
   newline and carriage return, DEL) or an id out of the database range 1..2^31-1 (422;
   query keys ``id``/``*_id``/``*_ids``, and path parameters so named, found by matching
   the app's routes when a path segment is zero, negative or over nine digits);
2. picks the body limit of the request's class — ``max_anonymous_bytes`` when the request
   carries no credentials (no bearer token, no session cookie), else blob uploads
   ``max_blob_bytes``, node JSON ``max_node_json_bytes``, multipart uploads
   ``max_upload_bytes``, everything else ``max_json_bytes`` — refuses a larger
   ``Content-Length`` at once (413, nothing read) and counts the streamed bytes, so a
   chunked body is cut off at the limit too (the route sees :class:`BodyTooLarge`, a 413);
3. for JSON and URL-encoded form bodies (except node results, which their route reads
   after authentication and checks the same way), reads the body (already bounded),
   refuses control characters in any string and ids out of range (keys ``id``,
   ``*_id``, ``*_ids``, ``datasets``), then hands the same bytes on to the app.

Routes that stream their body (blob uploads, node results) authenticate first and read
after; a request without credentials is cut at ``max_anonymous_bytes`` before any route
runs. Answers are JSON ``{"detail": message, "errors": [...]}`` (:mod:`.errors`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote

from annotated_types import Ge, Le
from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medfed.hub.config import HubSettings
from medfed.hub.services.learning import blobs

__all__ = [
    "MAX_ID",
    "BodyTooLarge",
    "EdgeMiddleware",
    "Id",
    "control_character_problem",
    "json_problem",
    "stream_to_store",
]

#: the largest id the hub stores (INTEGER columns: 32-bit signed on PostgreSQL)
MAX_ID = 2**31 - 1
#: an id in a path or query parameter: 1 .. 2^31-1, else 422
Id = Annotated[int, Ge(1), Le(MAX_ID)]

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ESCAPED_CONTROL = re.compile(rb"\\u00[01][0-9a-fA-F]|\\u007[fF]|\\[bf]")
_INTEGER = re.compile(r"[+-]?[0-9]+")
#: a path segment that cannot be an id: zero, negative, or more than 9 digits
_SUSPECT_SEGMENT = re.compile(r"/([+-]?0+|-[0-9]+|\+?[0-9]{10,})(/|$)")
_BLOB_PUT = re.compile(r"^/api/(blobs|node/runs/[^/]+/blob)/?$")
_NODE = "/api/node/"
#: node results: read by the route after authentication, checked there (json_problem)
_OUTCOME = re.compile(r"^/api/node/runs/[^/]+/outcome/?$")


class BodyTooLarge(HTTPException):
    """The body passed the limit of its route class (HTTP 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413, detail=f"the request body is larger than this route's {limit} bytes"
        )


class InvalidInput(Exception):
    """An input the edge refuses (422), with where it was found."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def control_character_problem(text: str) -> str | None:
    """What is wrong with ``text`` (a control character), or None."""
    found = _CONTROL.search(text)
    if found is None:
        return None
    return f"contains a control character (U+{ord(found.group()):04X}), which is not allowed"


def _id_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if 1 <= value <= MAX_ID:
        return None
    return f"the id {value} is outside 1..{MAX_ID}"


def _as_int(digits: str) -> int:
    """The integer, or one past the id range for a number too long to convert."""
    return int(digits) if len(digits) <= 20 else MAX_ID + 1


def _is_id_key(key: str) -> bool:
    return key == "id" or key.endswith(("_id", "_ids")) or key == "datasets"


#: keys whose value is an imported document with ids of its own (an ATLAS cohort's concept
#: sets are numbered from 0): no id check inside, control characters still refused
_DOCUMENTS = frozenset({"definition"})


def _walk(value: Any, where: str, id_key: bool, ids: bool = True) -> None:
    if isinstance(value, str):
        if (problem := control_character_problem(value)) is not None:
            raise InvalidInput(where, problem)
    elif isinstance(value, dict):
        for key, item in value.items():
            if (problem := control_character_problem(str(key))) is not None:
                raise InvalidInput(where, f"a key {problem}")
            inner = ids and str(key) not in _DOCUMENTS
            _walk(item, f"{where}.{key}", inner and _is_id_key(str(key)), inner)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, f"{where}.{index}", id_key, ids)
    elif id_key and (problem := _id_problem(value)) is not None:
        raise InvalidInput(where, problem)


def json_problem(raw: bytes, *, ids: bool = True) -> InvalidInput | None:
    """Control characters (and, with ``ids``, ids out of range) in a JSON body, or None.

    Raw control characters make the JSON itself invalid (the route's parser says so);
    escaped ones (``\\u0000``) are found here. Bodies that are not JSON are left to the
    route's own parser.
    """
    if not ids and not _ESCAPED_CONTROL.search(raw):
        return None  # fast path for large node results
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    try:
        _walk(value, "body", id_key=False)
    except InvalidInput as problem:
        return problem
    return None


def _pairs_problem(pairs: Iterable[tuple[str, str]], where: str) -> InvalidInput | None:
    for key, value in pairs:
        for text in (key, value):
            if (problem := control_character_problem(text)) is not None:
                return InvalidInput(f"{where}.{key[:40]}", problem)
        number = _INTEGER.fullmatch(value.strip()) if _is_id_key(key) else None
        if number is not None and (problem := _id_problem(_as_int(number.group()))) is not None:
            return InvalidInput(f"{where}.{key}", problem)
    return None


def _has_credentials(headers: dict[bytes, bytes]) -> bool:
    if headers.get(b"authorization", b"").strip():
        return True
    return b"medfed_session=" in headers.get(b"cookie", b"")


class EdgeMiddleware:
    """Limits and input checks around the whole app (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: HubSettings, routes: list[BaseRoute]) -> None:
        self.app = app
        self.settings = settings
        self.routes = routes  # the app's routes (the list itself: routes added later count)
        self._templates: list[tuple[re.Pattern[str], list[str]]] | None = None

    def limit_for(self, method: str, path: str, content_type: str, credentials: bool) -> int:
        s = self.settings
        if not credentials:
            return s.max_anonymous_bytes
        if method == "PUT" and _BLOB_PUT.match(path):
            return s.max_blob_bytes
        if path.startswith(_NODE):
            return s.max_node_json_bytes
        if content_type.startswith("multipart/"):
            return s.max_upload_bytes
        return s.max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from medfed.hub.api.errors import error_response

        headers = dict(scope.get("headers") or [])
        problem = self._url_problem(scope) or self._path_id_problem(scope)
        if problem is not None:
            await error_response(422, problem.args[0], [problem])(scope, receive, send)
            return
        content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
        limit = self.limit_for(
            scope["method"], scope["path"], content_type, _has_credentials(headers)
        )
        declared = headers.get(b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await error_response(413, BodyTooLarge(limit).detail)(scope, receive, send)
            return
        counted = _Counted(receive, limit)
        if not _OUTCOME.match(scope["path"]) and content_type.startswith(
            ("application/json", "application/x-www-form-urlencoded")
        ):
            try:
                body = await counted.read_all()
            except BodyTooLarge as exc:
                await error_response(413, exc.detail)(scope, receive, send)
                return
            problem = (
                json_problem(body)
                if content_type.startswith("application/json")
                else _pairs_problem(parse_qsl(body.decode("latin-1")), "form")
            )
            if problem is not None:
                await error_response(422, problem.args[0], [problem])(scope, receive, send)
                return
            await self.app(scope, _replay(body, receive), send)
            return
        await self.app(scope, counted, send)

    def _id_templates(self) -> list[tuple[re.Pattern[str], list[str]]]:
        """(path regex, its id parameters) of every route that has some; built once."""
        if self._templates is None:
            templates = []
            for context in iter_route_contexts(self.routes):
                path = context.path or ""
                names = [n for n in re.findall(r"{([^}:]+)", path) if _is_id_key(n)]
                if names:
                    templates.append((compile_path(path)[0], names))
            self._templates = templates
        return self._templates

    def _path_id_problem(self, scope: Scope) -> InvalidInput | None:
        """An id path parameter (``{x_id}``) outside 1..2^31-1, found by the route's match."""
        path = scope.get("path", "")
        if not _SUSPECT_SEGMENT.search(path):
            return None  # the common case: every number in the path is a plausible id
        for regex, names in self._id_templates():
            match = regex.match(path)
            if match is None:
                continue
            for name in names:
                number = _INTEGER.fullmatch(match.group(name))
                if number is not None and (problem := _id_problem(_as_int(number.group()))):
                    return InvalidInput(f"path.{name}", problem)
        return None

    @staticmethod
    def _url_problem(scope: Scope) -> InvalidInput | None:
        path = scope.get("path", "")
        if (problem := control_character_problem(path)) is not None:
            return InvalidInput("path", problem)
        query = scope.get("query_string", b"").decode("latin-1")
        try:
            pairs = parse_qsl(query, keep_blank_values=True, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            return InvalidInput("query", "is not valid UTF-8")
        if (refused := _pairs_problem(pairs, "query")) is not None:
            return refused
        if (problem := control_character_problem(unquote(query))) is not None:
            return InvalidInput("query", problem)
        return None


class _Counted:
    """``receive`` that counts body bytes and raises :class:`BodyTooLarge` past ``limit``."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self._seen = 0

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._seen += len(message.get("body", b""))
            if self._seen > self._limit:
                raise BodyTooLarge(self._limit)
        return message

    async def read_all(self) -> bytes:
        chunks = []
        while True:
            message = await self()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


async def stream_to_store(request: Request, max_bytes: int, sha256: str) -> tuple[str, int]:
    """Stream the request body into the blob store (file work in the thread pool).

    The body is read chunk by chunk, never whole; the temporary file is removed when the
    upload fails (too large, hash differs, client gone). Returns (sha256, size).
    """
    writer = await run_in_threadpool(blobs.store_for(request.app.state.settings).writer, max_bytes)
    try:
        async for chunk in request.stream():
            if chunk:
                await run_in_threadpool(writer.write, chunk)
        return await run_in_threadpool(writer.finish, sha256)
    except BaseException:
        writer.abort()
        raise


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # http.disconnect, as the server reports it

    return replay
