"""``/pid/{id}``: resolve a dataset version's persistent id (a DOI or ``mfd.<id>``).

A client that asks for JSON (``Accept: application/json`` or ``?format=json``) gets the
:class:`PidRecord`; anyone else is redirected (303) to the dataset's page
``/datasets/{id}``. An invalidated version answers with its tombstone instead: JSON
with ``tombstone: true``, the label and the reason, or a small HTML page with the same
(status 200: the link still works).
Anonymous callers may resolve the pids of published versions; a version the caller may not
see (a released one, for anyone but its authors and entitled projects) answers 404 like an
unknown pid, in JSON and HTML alike.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from medfed.hub.api.deps import SessionDep
from medfed.hub.api.routes.catalogue import OptionalUser
from medfed.hub.db.models import User
from medfed.hub.services.catalogue import pids

router = APIRouter()


def _wants_json(request: Request) -> bool:
    if request.query_params.get("format") == "json":
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept or "application/ld+json" in accept


@router.get("/pid/{pid}", tags=["catalogue"], response_model=None)
def resolve(pid: str, request: Request, user: OptionalUser, session: SessionDep) -> Response:
    """Resolve a hub pid (``mfd.<id>``)."""
    return _answer(pid, request, user, session)


@router.get("/pid/{prefix}/{suffix}", tags=["catalogue"], response_model=None)
def resolve_doi(
    prefix: str, suffix: str, request: Request, user: OptionalUser, session: SessionDep
) -> Response:
    """Resolve a DOI (``10.5281/zenodo.123``)."""
    return _answer(f"{prefix}/{suffix}", request, user, session)


def _answer(pid: str, request: Request, user: User | None, session: SessionDep) -> Response:
    dataset = pids.resolve_pid(session, pid, user=user)
    base = str(request.base_url).rstrip("/")
    page = f"{base}/datasets/{dataset.id}"
    found = pids.pid_record(dataset, pid=pid, url=page)
    if _wants_json(request):
        return JSONResponse(found.model_dump(mode="json"))
    if not found.tombstone:
        return RedirectResponse(page, status_code=303)
    html = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(found.name)} v{found.version} (withdrawn)</title></head><body>"
        f"<h1>{escape(found.name)} — version {found.version}</h1>"
        f"<p><strong>{escape(found.label)}</strong></p>"
        f"<p>Persistent id: <code>{escape(pid)}</code>; invalidated "
        f"{found.invalidated_at.isoformat() if found.invalidated_at else ''}.</p>"
        "<p>This dataset version can no longer be used.</p></body></html>"
    )
    return HTMLResponse(html)
