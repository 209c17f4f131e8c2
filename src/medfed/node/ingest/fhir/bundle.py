"""Reading a FHIR bulk export: NDJSON lines → validated ``fhir.resources`` models, streamed.

How it runs:

* :func:`iter_bundle` reads every ``*.ndjson`` / ``*.ndjson.gz`` file of the export in
  name order, line by line, and yields one validated model at a time (nothing of the
  export is held in memory). Each line's ``resourceType`` says what it is (the file name
  is not trusted); types other than :data:`TYPES` are counted and skipped. A line that is
  not JSON or not a valid R4 resource raises :class:`BadRequest` naming the file, the line
  and the field path — never a value.
* :class:`Spool` is what the CDM ingest uses: it runs :func:`iter_bundle` over the whole
  export once — so a bad line refuses the ingest before anything is opened or written —
  and pickles each validated model to a per-type file in a private temporary folder.
  :meth:`Spool.items` then streams one type's models back in export order, so the ingest
  can take the types in the order it needs (Patients, then Encounters, …) with memory
  bounded by one model, not the export. The folder is removed when the spool closes.
* :func:`read_bundle` collects everything in memory (small exports, tests).
"""

from __future__ import annotations

import gzip
import json
import pickle
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from pydantic import ValidationError

from medfed.common.errors import BadRequest

__all__ = ["TYPES", "Spool", "export_files", "iter_bundle", "read_bundle"]

TYPES = (
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "Procedure",
    "ImagingStudy",
    "Consent",
)


def _model(resource_type: str) -> Any:
    module = __import__(f"fhir.resources.R4B.{resource_type.lower()}", fromlist=[resource_type])
    return getattr(module, resource_type)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, line
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise BadRequest(f"fhir: cannot read {path.name}: {type(exc).__name__}") from None


def export_files(directory: Path) -> list[Path]:
    """The export's NDJSON files in name order; none is a clear error."""
    files = sorted([*directory.glob("*.ndjson"), *directory.glob("*.ndjson.gz")])
    if not directory.is_dir() or not files:
        raise BadRequest(f"fhir: no .ndjson files in {directory}")
    return files


def iter_bundle(directory: Path, other: Counter[str]) -> Iterator[Any]:
    """Validated models of the mapped types in export order; other types counted in ``other``."""
    models = {t: _model(t) for t in TYPES}
    for path in export_files(directory):
        for number, line in _lines(path):
            try:
                raw = json.loads(line)
            except ValueError:
                raise BadRequest(f"fhir: {path.name} line {number} is not JSON") from None
            kind = raw.get("resourceType") if isinstance(raw, dict) else None
            if kind not in models:
                other[str(kind)[:40]] += 1
                continue
            try:
                yield models[kind].model_validate(raw)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or kind
                raise BadRequest(
                    f"fhir: {path.name} line {number}: {kind} is not valid R4 at '{where}' "
                    f"({first['type']})"
                ) from None


def read_bundle(directory: Path) -> tuple[dict[str, list[Any]], Counter[str]]:
    """Validated models per mapped type, and the count of other types skipped."""
    found: dict[str, list[Any]] = defaultdict(list)
    other: Counter[str] = Counter()
    for model in iter_bundle(directory, other):
        found[model.get_resource_type()].append(model)
    return found, other


class Spool:
    """An export validated once and kept on disk per type (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.other: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self._folder = tempfile.TemporaryDirectory(prefix="medfed-fhir-")
        self._root = Path(self._folder.name)
        handles: dict[str, IO[bytes]] = {}
        try:
            for model in iter_bundle(directory, self.other):
                kind = model.get_resource_type()
                if kind not in handles:
                    handles[kind] = (self._root / f"{kind}.pickle").open("wb")
                pickle.dump(model, handles[kind], protocol=pickle.HIGHEST_PROTOCOL)
                self.counts[kind] += 1
        except BaseException:
            for handle in handles.values():
                handle.close()
            self._folder.cleanup()
            raise
        for handle in handles.values():
            handle.close()

    def items(self, kind: str) -> Iterator[Any]:
        """One type's models, in export order, one at a time."""
        path = self._root / f"{kind}.pickle"
        if not path.exists():
            return
        with path.open("rb") as handle:
            while True:
                try:
                    yield pickle.load(handle)  # our own spool of validated models
                except EOFError:
                    return

    def close(self) -> None:
        self._folder.cleanup()

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
