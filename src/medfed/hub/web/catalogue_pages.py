"""Catalogue pages: faceted search (``/``, ``/catalogue``) and the dataset page.

Search and facets come from the catalogue service's ``search`` (the same call as the
catalogue API), so a visitor sees exactly what the service lets them see: anonymous
visitors only published datasets. Facet links keep the other chosen facets; with htmx the
result list is swapped in place while typing (the full page still works without it).
The dataset page shows the metadata, the versions (previous/next), the state label, the
persistent id, the aggregates the node sent, the DUO conditions and an "apply for access"
button that opens the application form for that dataset.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from medfed.hub.api.deps import SessionDep
from medfed.hub.web import catalogue_views
from medfed.hub.web.session import PageRoute, VisitorDep, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/")
@router.get("/catalogue")
def catalogue(
    request: Request,
    visitor: VisitorDep,
    session: SessionDep,
    q: str = Query(default="", max_length=200),
    keyword: list[str] = Query(default_factory=list),
    theme: list[str] = Query(default_factory=list),
    modality: list[str] = Query(default_factory=list),
    duo: list[str] = Query(default_factory=list),
    access_rights: list[str] = Query(default_factory=list),
    node: list[str] = Query(default_factory=list),
    state: list[str] = Query(default_factory=list),
) -> Response:
    chosen = {
        "keyword": keyword,
        "theme": theme,
        "modality": modality,
        "duo": duo,
        "access_rights": access_rights,
        "node": node,
        "state": state,
    }
    found = catalogue_views.search(session, user=visitor.user, q=q, chosen=chosen)
    return render(request, "catalogue.html", {"q": q, "chosen": chosen, "found": found})


@router.get("/datasets/{dataset_id}")
def dataset_page(
    dataset_id: int, request: Request, visitor: VisitorDep, session: SessionDep
) -> Response:
    view = catalogue_views.dataset_view(session, user=visitor.user, dataset_id=dataset_id)
    return render(request, "dataset.html", {"view": view})
