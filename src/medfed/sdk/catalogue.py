"""``client.catalogue``: dataset lifecycle, metadata, versions, exports, search and pids.

Every method returns typed objects from ``medfed.common.catalogue_resources`` (the DCAT
and DataCite exports are JSON documents by nature and come back as dicts).
"""

from __future__ import annotations

import builtins
from typing import Any

from medfed.common.catalogue_resources import (
    CatalogueResults,
    DatasetMetadataUpdate,
    DatasetRecord,
    PidRecord,
    ZenodoDepositionPublic,
    ZenodoSettingsPublic,
)
from medfed.sdk.http import HubHTTP

__all__ = ["Catalogue"]

TRANSITIONS = ("release", "publish", "invalidate", "reactivate")


class Catalogue:
    def __init__(self, http: HubHTTP) -> None:
        self._http = http

    def _move(self, dataset_id: int, move: str, reason: str = "") -> DatasetRecord:
        data = self._http.request(
            "POST", f"/api/datasets/{dataset_id}/{move}", json={"reason": reason}
        )
        return DatasetRecord.model_validate(data)

    def release(self, dataset_id: int) -> DatasetRecord:
        return self._move(dataset_id, "release")

    def publish(self, dataset_id: int) -> DatasetRecord:
        return self._move(dataset_id, "publish")

    def invalidate(self, dataset_id: int, reason: str) -> DatasetRecord:
        return self._move(dataset_id, "invalidate", reason)

    def reactivate(self, dataset_id: int) -> DatasetRecord:
        return self._move(dataset_id, "reactivate")

    def show(self, dataset_id: int) -> DatasetRecord:
        return DatasetRecord.model_validate(
            self._http.request("GET", f"/api/catalogue/{dataset_id}")
        )

    def versions(self, dataset_id: int) -> builtins.list[DatasetRecord]:
        data = self._http.request("GET", f"/api/datasets/{dataset_id}/versions")
        return [DatasetRecord.model_validate(d) for d in data]

    def update(self, dataset_id: int, **fields: Any) -> DatasetRecord:
        """Describe a draft: ``title=``, ``description=``, ``keywords=``, ``duo_codes=``,
        ``contact=``, ``license=`` … (fields left out stay as they are)."""
        body = DatasetMetadataUpdate.model_validate(fields).model_dump(exclude_unset=True)
        data = self._http.request("PATCH", f"/api/datasets/{dataset_id}/metadata", json=body)
        return DatasetRecord.model_validate(data)

    def search(
        self, q: str = "", *, limit: int = 50, offset: int = 0, **facets: Any
    ) -> CatalogueResults:
        """``search("breast", theme="HEAL", duo=["GRU", "HMB"])``; facets AND-ed."""
        params: dict[str, Any] = {"q": q, "limit": limit, "offset": offset}
        for name, value in facets.items():
            if value is not None:
                params[name] = value if isinstance(value, list | tuple) else [value]
        return CatalogueResults.model_validate(
            self._http.request("GET", "/api/catalogue", params=params)
        )

    def dcat(self, dataset_id: int) -> dict[str, Any]:
        data: dict[str, Any] = self._http.request("GET", f"/api/datasets/{dataset_id}/dcat")
        return data

    def datacite(self, dataset_id: int) -> dict[str, Any]:
        data: dict[str, Any] = self._http.request("GET", f"/api/datasets/{dataset_id}/datacite")
        return data

    def resolve(self, pid: str) -> PidRecord:
        return PidRecord.model_validate(
            self._http.request("GET", f"/pid/{pid}", params={"format": "json"})
        )

    def depositions(self, dataset_id: int) -> builtins.list[ZenodoDepositionPublic]:
        data = self._http.request("GET", f"/api/datasets/{dataset_id}/zenodo")
        return [ZenodoDepositionPublic.model_validate(d) for d in data]

    def set_zenodo(
        self, organization_id: int, *, token: str | None, url: str = "https://zenodo.org"
    ) -> ZenodoSettingsPublic:
        data = self._http.request(
            "PUT", f"/api/organizations/{organization_id}/zenodo", json={"url": url, "token": token}
        )
        return ZenodoSettingsPublic.model_validate(data)
