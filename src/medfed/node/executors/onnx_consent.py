"""A site steward's consent to shared validation studies, kept at the node.

``medfed validation consent STUDY --config node.toml [--share-site]`` writes here (or
``--model SHA256``: every shared study of that model file, so a steward can agree before
the study exists); ``--withdraw`` removes it. The file
``DATA_DIR/validation/consents.json`` maps a study id (or ``model:SHA256``) to
``{"take_part": true, "share_site": bool, "by": ..., "at": ...}``; it is written whole
to a temporary file and moved into place, so the agent reads an old or a new version,
never half of one. A shared study's run at a site without an entry is withheld (the site
contributes nothing); ``share_site`` lets the study's owner see this site's own results
beside the pooled ones.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from medfed.algorithms.validation.scoring import Consent
from medfed.common.timeutil import utcnow

__all__ = ["ConsentStore"]


class ConsentStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "validation" / "consents.json"

    def _read(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return raw if isinstance(raw, dict) else {}

    def _write(self, entries: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(entries, handle, indent=2, sort_keys=True)
        os.replace(name, self.path)

    @staticmethod
    def _key(study_id: int | None, model: str | None) -> str:
        if (study_id is None) == (model is None):
            raise ValueError("consent to one study (its id) or to one model (its SHA-256)")
        return str(study_id) if study_id is not None else f"model:{model}"

    def give(
        self,
        study_id: int | None = None,
        *,
        model: str | None = None,
        share_site: bool,
        by: str = "steward",
    ) -> None:
        entries = self._read()
        entries[self._key(study_id, model)] = {
            "take_part": True,
            "share_site": share_site,
            "by": by,
            "at": utcnow().isoformat(),
        }
        self._write(entries)

    def withdraw(self, study_id: int | None = None, *, model: str | None = None) -> bool:
        entries = self._read()
        found = entries.pop(self._key(study_id, model), None) is not None
        self._write(entries)
        return found

    def get(self, study_id: int | None, *, model: str | None = None) -> Consent | None:
        """The study's own entry, else the model's (every shared study of that file)."""
        entries = self._read()
        keys = [str(study_id)] if study_id is not None else []
        if model is not None:
            keys.append(f"model:{model}")
        for key in keys:
            entry = entries.get(key)
            if isinstance(entry, dict):
                return Consent(
                    take_part=bool(entry.get("take_part")),
                    share_site=bool(entry.get("share_site")),
                )
        return None

    def all(self) -> dict[str, Any]:
        return self._read()
