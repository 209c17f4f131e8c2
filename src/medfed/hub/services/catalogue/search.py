"""Faceted search over the catalogue, respecting who may see which version.

How it runs: one query loads the dataset versions the user may see
(``lifecycle.visible_clause``: anonymous visitors see published ones only), keeps the
newest visible version of each (node, name) and leaves invalidated ones out (they stay
reachable by link and pid). The filters are then applied in Python — the catalogue of a
federation holds hundreds of datasets, not millions: ``q`` (every word must appear in
the name, title, description or keywords, case-insensitive), and the facets ``theme``,
``keyword``, ``modality`` (from the node's aggregates), ``access_rights``, ``duo`` (a
dataset code or its base, e.g. ``DS`` matches ``DS:cancer``), ``state`` and ``node``.
Several values of one facet match any of them; different facets must all match. Facet
counts are over the matching results (what a further click would leave).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from medfed.common.catalogue_resources import CatalogueResults, FacetCount
from medfed.hub.db.models import Dataset, Node, User
from medfed.hub.services.catalogue.lifecycle import State, visible_clause
from medfed.hub.services.catalogue.metadata import record_of

__all__ = ["FACETS", "facet_values", "search", "visible_datasets"]

FACETS = ("theme", "keyword", "modality", "access_rights", "duo", "state", "node")
MAX_LIMIT = 200


def visible_datasets(
    session: Session, *, user: User | None, node_id: int | None = None
) -> list[Dataset]:
    """Every version ``user`` may see (all states), by id."""
    query = (
        select(Dataset)
        .join(Node, Node.id == Dataset.node_id)
        .where(visible_clause(session, user))
        .order_by(Dataset.id)
    )
    if node_id is not None:
        query = query.where(Dataset.node_id == node_id)
    return list(session.scalars(query))


def _node_names(session: Session) -> dict[int, str]:
    return {n.id: n.name for n in session.scalars(select(Node))}


def facet_values(dataset: Dataset, facet: str, node_names: dict[int, str]) -> list[str]:
    """The values one dataset contributes to a facet."""
    if facet == "theme":
        return list(dataset.themes)
    if facet == "keyword":
        return [k.lower() for k in dataset.keywords]
    if facet == "modality":
        modalities = (dataset.summary or {}).get("modalities")
        return sorted(modalities) if isinstance(modalities, dict) else []
    if facet == "access_rights":
        return [dataset.access_rights]
    if facet == "duo":
        return sorted({c.partition(":")[0] for c in dataset.duo_codes} | set(dataset.duo_codes))
    if facet == "state":
        return [dataset.state]
    return [node_names.get(dataset.node_id, str(dataset.node_id))]


def _text(dataset: Dataset) -> str:
    parts = [dataset.name, dataset.title or "", dataset.description, *dataset.keywords]
    return " ".join(parts).lower()


def search(
    session: Session,
    *,
    user: User | None,
    q: str = "",
    filters: Mapping[str, Sequence[str]] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> CatalogueResults:
    """Matching datasets (newest visible version each), their total and the facet counts."""
    names = _node_names(session)
    newest: dict[tuple[int, str], Dataset] = {}
    for dataset in visible_datasets(session, user=user):
        if dataset.state == State.invalidated.value:
            continue
        key = (dataset.node_id, dataset.name)
        if key not in newest or newest[key].version < dataset.version:
            newest[key] = dataset
    words = [w for w in q.lower().split() if w]
    wanted = {
        k: {v.lower() if k == "keyword" else v for v in vs}
        for k, vs in (filters or {}).items()
        if vs
    }
    checks: list[Callable[[Dataset], bool]] = [lambda d: all(w in _text(d) for w in words)]
    for facet, values in wanted.items():
        checks.append(
            lambda d, f=facet, vs=values: bool(vs & set(facet_values(d, f, names)))  # type: ignore[misc]
        )
    hits = sorted(
        (d for d in newest.values() if all(check(d) for check in checks)),
        key=lambda d: ((d.title or d.name).lower(), d.node_id),
    )
    facets: dict[str, list[FacetCount]] = {}
    for facet in FACETS:
        counts = Counter(v for d in hits for v in facet_values(d, facet, names))
        facets[facet] = [
            FacetCount(value=v, count=c)
            for v, c in sorted(counts.items(), key=lambda i: (-i[1], i[0]))
        ]
    limit = max(1, min(limit, MAX_LIMIT))
    page = hits[offset : offset + limit]
    return CatalogueResults(
        total=len(hits), results=[record_of(session, d) for d in page], facets=facets
    )
