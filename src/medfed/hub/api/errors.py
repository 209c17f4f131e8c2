"""The hub's one error model and the exception handlers that produce it.

Every error answer of the API is JSON :class:`ErrorBody`: ``detail`` (one line naming the
problem, never a data value) and, for input errors, ``errors`` (where and what, one item
per problem). :func:`install` registers the handlers on an app:

- :class:`~medfed.common.errors.MedfedError` → its status (429 with ``Retry-After``);
- request validation → 422 with ``errors``; ids out of the database range
  (``OverflowError`` on SQLite, ``DataError`` on PostgreSQL) → 422;
- two concurrent creates of one name (``IntegrityError``) → 409;
- the database unreachable, locked or restarting (``OperationalError``, an invalidated
  connection, a pool timeout) → 503 with ``Retry-After``: the next request opens a new
  connection, so the hub recovers by itself when the database is back.

:data:`ERROR_RESPONSES` documents these answers on every route of the OpenAPI schema.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from medfed.common.errors import MedfedError, RateLimited
from medfed.common.timeutil import utcnow

__all__ = [
    "ERROR_RESPONSES",
    "RETRY_AFTER_SECONDS",
    "ErrorBody",
    "ErrorItem",
    "error_response",
    "install",
    "rate_limited_response",
]

log = logging.getLogger(__name__)

#: what a 503 asks the client to wait before it tries again
RETRY_AFTER_SECONDS = 2


class ErrorItem(BaseModel):
    """One problem in the input: where (``loc``), what (``msg``) and its kind (``type``)."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error answer: a one-line ``detail``; input errors list each problem."""

    detail: str
    errors: list[ErrorItem] | None = None
    resets_at: str | None = None


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or invalid credentials"},
    403: {"model": ErrorBody, "description": "not allowed for these credentials"},
    404: {"model": ErrorBody, "description": "not found (or not visible to the caller)"},
    409: {"model": ErrorBody, "description": "conflicts with the current state"},
    413: {"model": ErrorBody, "description": "the body is larger than the route's limit"},
    422: {"model": ErrorBody, "description": "invalid input; ``errors`` says where"},
    429: {
        "model": ErrorBody,
        "description": "a budget or the login throttle is used up",
        "headers": _RETRY_AFTER,
    },
    503: {
        "model": ErrorBody,
        "description": "the database is unavailable for a moment; retry later",
        "headers": _RETRY_AFTER,
    },
}


def error_response(
    status_code: int,
    detail: str,
    problems: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An :class:`ErrorBody` answer; ``problems`` are edge refusals (``where``, ``message``)."""
    body: dict[str, Any] = {"detail": detail}
    if problems:
        body["errors"] = [
            {"loc": str(p.where).split("."), "msg": p.message, "type": "value_error"}
            for p in problems
        ]
    return JSONResponse(body, status_code=status_code, headers=headers)


def rate_limited_response(exc: RateLimited) -> JSONResponse:
    """429 with the reset time in the body (``resets_at``) and as ``Retry-After`` seconds."""
    body: dict[str, object] = {"detail": exc.message, "resets_at": None}
    headers: dict[str, str] = {}
    if exc.resets_at is not None:
        body["resets_at"] = exc.resets_at.isoformat()
        wait = (exc.resets_at - utcnow()).total_seconds()
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


def validation_items(exc: RequestValidationError) -> list[dict[str, Any]]:
    items = []
    for error in exc.errors():
        loc = [p if isinstance(p, int) else str(p) for p in error.get("loc", ())]
        items.append({"loc": loc, "msg": str(error.get("msg")), "type": str(error.get("type"))})
    return items


def validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {error.get('msg')}" if loc else str(error.get("msg")))
    return "; ".join(parts) or "invalid request"


def is_outage(exc: Exception) -> bool:
    """Whether ``exc`` says the database is unreachable or busy, not that a query is wrong."""
    if isinstance(exc, OperationalError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def outage_response() -> JSONResponse:
    return JSONResponse(
        {"detail": "the hub's database is unavailable for a moment; try again shortly"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def install(app: FastAPI) -> None:
    """Register the hub's exception handlers on ``app``."""

    @app.exception_handler(MedfedError)
    async def _medfed_error(_: Request, exc: MedfedError) -> JSONResponse:
        if isinstance(exc, RateLimited):
            return rate_limited_response(exc)
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(IntegrityError)
    async def _integrity_error(_: Request, exc: IntegrityError) -> JSONResponse:
        # two concurrent creates of one name: the loser gets what a later request would
        return JSONResponse(
            {"detail": "conflicts with an existing record (a name or id is taken)"},
            status_code=409,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        body = {"detail": validation_message(exc), "errors": validation_items(exc)}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(OverflowError)
    async def _overflow(_: Request, exc: OverflowError) -> JSONResponse:
        return JSONResponse(
            {"detail": "a number is outside the range the hub stores"}, status_code=422
        )

    @app.exception_handler(DBAPIError)
    async def _database_error(_: Request, exc: DBAPIError) -> JSONResponse:
        if is_outage(exc):
            log.warning("database unavailable: %s", type(exc.orig).__name__)
            return outage_response()
        if isinstance(exc, DataError):
            # a value the database cannot hold (a number beyond its range, a NUL byte)
            return JSONResponse(
                {"detail": "a value is outside the range or format the hub stores"},
                status_code=422,
            )
        log.error("database error", exc_info=exc)
        return JSONResponse({"detail": "internal error (logged at the hub)"}, status_code=500)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # the error model holds for a bug too; the traceback goes to the hub's log
        return JSONResponse({"detail": "internal error (logged at the hub)"}, status_code=500)

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(_: Request, exc: PoolTimeout) -> JSONResponse:
        return outage_response()
