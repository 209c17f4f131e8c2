"""Catalogue pages: faceted search (``/``, ``/catalogue``) and the dataset page.

Search and facets come from the catalogue service's ``search`` (the same call as the
catalogue API), so a visitor sees exactly what the service lets them see: anonymous
visitors only published datasets. Facet links keep the other chosen facets; with htmx the
result list is swapped in place while typing (the full page still works without it).
The dataset page shows the metadata, the versions (previous/next), the state label, the
persistent id, the aggregates the node sent, the DUO conditions and an "apply for access"
button that opens the application form for that dataset. For the stewards and admins of
the organization that holds a draft it also has the describe form, which posts to
``/datasets/{id}/describe`` (the catalogue service's ``update_metadata``, as ``PATCH
/api/datasets/{id}/metadata``): a field the service refuses comes back in the form with
what was typed and its reason, and nothing is stored.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from medfed.common.catalogue_resources import DatasetMetadataUpdate
from medfed.common.errors import BadRequest
from medfed.hub.api.deps import SessionDep
from medfed.hub.services.catalogue import metadata
from medfed.hub.web import catalogue_views
from medfed.hub.web.session import CheckedVisitor, PageRoute, VisitorDep, redirect, render

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


@router.post("/datasets/{dataset_id}/describe")
def dataset_describe(
    dataset_id: int,
    request: Request,
    visitor: CheckedVisitor,
    session: SessionDep,
    title: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    keywords: Annotated[str, Form()] = "",
    themes: Annotated[str, Form()] = "",
    duo_codes: Annotated[str, Form()] = "",
    contact: Annotated[str, Form()] = "",
    license: Annotated[str, Form()] = "",
    access_rights: Annotated[str, Form()] = "",
    access_conditions: Annotated[list[str] | None, Form()] = None,
    unique_individuals: Annotated[str, Form()] = "",
    records: Annotated[str, Form()] = "",
) -> Response:
    user = visitor.require()
    form = {
        "title": title,
        "description": description,
        "keywords": keywords,
        "themes": themes,
        "duo_codes": duo_codes,
        "contact": contact,
        "license": license,
        "access_rights": access_rights,
        "access_conditions": access_conditions or [],
        "unique_individuals": unique_individuals,
        "records": records,
    }
    body, errors = catalogue_views.describe_body(form)
    if not errors:
        try:
            metadata.update_metadata(
                session,
                actor=user,
                dataset_id=dataset_id,
                body=DatasetMetadataUpdate.model_validate(body),
            )
        except BadRequest as exc:  # refused input; not allowed or not a draft: an error page
            errors = [exc.message]
        else:
            session.commit()
            return redirect(f"/datasets/{dataset_id}")
    session.rollback()
    view = catalogue_views.dataset_view(session, user=user, dataset_id=dataset_id)
    view.form, view.errors = form, errors
    return render(request, "dataset.html", {"view": view}, status_code=422)
