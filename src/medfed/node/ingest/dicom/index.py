"""The imaging index: one row per de-identified DICOM file, a table algorithms can select on.

How it runs: the ingest worker calls :func:`index_row` on each OUTPUT dataset right after
writing it; the row is a plain JSON-able dict (it travels through the runner's resume
state). At the end :func:`write_index` turns all rows into one table with a fixed column
set and fixed types (:data:`INDEX_COLUMNS`) — Parquet by default, CSV on request — sorted
by patient, study, series and instance, with file paths relative to the index file
(pandas and pyarrow are imported there, not with this module, so a worker that only makes
rows does not load them). The
node's :class:`~medfed.node.stores.tables.TableStore` opens it like any clinical table;
``patient_pseudonym`` (the output's PatientID, the keyed pseudonym) is the key that joins
it with clinical tables pseudonymised with the same node secret.

Geometry (pixel spacing, slice thickness, orientation, position) is read from the top
level or, for enhanced multi-frame objects, from the shared and then the first per-frame
functional group. Every value comes from the output, so dates are the shifted ones and the
series description is the cleaned one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["INDEX_COLUMNS", "index_frame", "index_row", "write_index"]

# name -> medfed column type; the order is the file's column order
INDEX_COLUMNS: dict[str, str] = {
    "patient_pseudonym": "string",
    "patient_sex": "string",
    "patient_age": "integer",  # years, from PatientAge when retained
    "study_uid": "string",
    "series_uid": "string",
    "sop_instance_uid": "string",
    "sop_class_uid": "string",
    "modality": "string",
    "body_part_examined": "string",
    "manufacturer": "string",
    "manufacturer_model": "string",
    "series_description": "string",
    "series_number": "integer",
    "instance_number": "integer",
    "acquisition_date": "date",
    "rows": "integer",
    "columns": "integer",
    "number_of_frames": "integer",
    "pixel_spacing_row": "float",
    "pixel_spacing_col": "float",
    "slice_thickness": "float",
    "spacing_between_slices": "float",
    "image_orientation": "string",  # six direction cosines, backslash-separated
    "image_position_x": "float",
    "image_position_y": "float",
    "image_position_z": "float",
    "path": "string",
    "file_size": "integer",
}
_ARROW = {"string": "string", "integer": "int64", "float": "float64", "date": "timestamp[us]"}
_PANDAS: dict[str, Any] = {
    "string": "object",
    "integer": "Int64",
    "float": "float64",
    "date": "datetime64[us]",
}
_TAGS: dict[str, BaseTag] = {}
_ASCII_VRS = frozenset({"AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"})
_AGE_UNITS = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}


def _get(ds: Dataset, keyword: str) -> Any:
    """The value of ``keyword`` in ``ds`` (None if absent), by tag: faster than ds.get.

    A raw element (copied as read, not converted) of a plain-ASCII or unsigned short VR is
    decoded here; pydicom converts the others.
    """
    tag = _TAGS.get(keyword)
    if tag is None:
        number = tag_for_keyword(keyword)
        if number is None:
            raise KeyError(f"index: {keyword} is not a DICOM keyword")
        _TAGS[keyword] = tag = BaseTag(number)
    elem = ds._dict.get(tag)
    if elem is None:
        return None
    if isinstance(elem, RawDataElement):
        vr, raw = elem.VR or dictionary_VR(tag), elem.value
        if raw is None:
            return None
        if vr in _ASCII_VRS:
            values = raw.decode("latin-1").strip(" \x00").split("\\")
            return values[0] if len(values) == 1 else values
        if vr == "US" and len(raw) == 2:
            return int.from_bytes(raw, "little" if elem.is_little_endian else "big")
        elem = ds[tag]
    return elem.value


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN -> None


def _int(value: Any) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def _numbers(value: Any) -> list[float] | None:
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return numbers or None


def _geometry(ds: Dataset, keyword: str, group: str) -> Any:
    """``keyword`` from the top level, else from the functional group macro ``group``."""
    value = _get(ds, keyword)
    if value not in (None, ""):
        return value
    for fg_keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = _get(ds, fg_keyword)
        if not groups:
            continue
        macro = _get(groups[0], group)
        if macro:
            value = _get(macro[0], keyword)
            if value not in (None, ""):
                return value
    return None


def _age(value: Any) -> int | None:
    text = _text(value)
    if not text or len(text) < 2 or text[-1].upper() not in _AGE_UNITS or not text[:-1].isdigit():
        return None
    return int(int(text[:-1]) * _AGE_UNITS[text[-1].upper()])


def _date(ds: Dataset) -> str | None:
    """The acquisition date (else content, series, study date) as ``YYYY-MM-DD``."""
    candidates = [_get(ds, "AcquisitionDate"), str(_get(ds, "AcquisitionDateTime") or "")[:8]]
    candidates += [_get(ds, "ContentDate"), _get(ds, "SeriesDate"), _get(ds, "StudyDate")]
    for value in candidates:
        text = _text(value)
        if text and len(text) >= 8 and text[:8].isdigit():
            return f"{text[:4]}-{text[4:6]}-{text[6:8]}"
    return None


def index_row(
    output_ds: Dataset, out_path: str | os.PathLike[str], *, size: int | None = None
) -> dict[str, Any]:
    """The index row of one de-identified file (JSON-able values; None where absent).

    ``size``: the file's size in bytes, when the file is not (yet) at ``out_path``;
    otherwise it is read from the file, and :func:`write_index` fills in any still missing.
    """
    out_path = Path(out_path)
    if size is None:
        try:
            size = out_path.stat().st_size
        except OSError:
            size = None
    spacing = _numbers(_geometry(output_ds, "PixelSpacing", "PixelMeasuresSequence"))
    orientation = _numbers(
        _geometry(output_ds, "ImageOrientationPatient", "PlaneOrientationSequence")
    )
    position = _numbers(_geometry(output_ds, "ImagePositionPatient", "PlanePositionSequence"))
    frames = _int(_get(output_ds, "NumberOfFrames"))
    if frames is None and "PixelData" in output_ds:
        frames = 1
    row: dict[str, Any] = {
        "patient_pseudonym": _text(_get(output_ds, "PatientID")),
        "patient_sex": _text(_get(output_ds, "PatientSex")),
        "patient_age": _age(_get(output_ds, "PatientAge")),
        "study_uid": _text(_get(output_ds, "StudyInstanceUID")),
        "series_uid": _text(_get(output_ds, "SeriesInstanceUID")),
        "sop_instance_uid": _text(_get(output_ds, "SOPInstanceUID")),
        "sop_class_uid": _text(_get(output_ds, "SOPClassUID")),
        "modality": _text(_get(output_ds, "Modality")),
        "body_part_examined": _text(_get(output_ds, "BodyPartExamined")),
        "manufacturer": _text(_get(output_ds, "Manufacturer")),
        "manufacturer_model": _text(_get(output_ds, "ManufacturerModelName")),
        "series_description": _text(_get(output_ds, "SeriesDescription")),
        "series_number": _int(_get(output_ds, "SeriesNumber")),
        "instance_number": _int(_get(output_ds, "InstanceNumber")),
        "acquisition_date": _date(output_ds),
        "rows": _int(_get(output_ds, "Rows")),
        "columns": _int(_get(output_ds, "Columns")),
        "number_of_frames": frames,
        "pixel_spacing_row": spacing[0] if spacing and len(spacing) == 2 else None,
        "pixel_spacing_col": spacing[1] if spacing and len(spacing) == 2 else None,
        "slice_thickness": _float(_geometry(output_ds, "SliceThickness", "PixelMeasuresSequence")),
        "spacing_between_slices": _float(
            _geometry(output_ds, "SpacingBetweenSlices", "PixelMeasuresSequence")
        ),
        "image_orientation": (
            "\\".join(f"{v:g}" for v in orientation)
            if orientation and len(orientation) == 6
            else None
        ),
        "image_position_x": position[0] if position and len(position) == 3 else None,
        "image_position_y": position[1] if position and len(position) == 3 else None,
        "image_position_z": position[2] if position and len(position) == 3 else None,
        "path": str(out_path),
        "file_size": size,
    }
    return row


def _relative(path: Any, roots: tuple[str, ...]) -> Any:
    """``path`` relative to the first of ``roots`` (as given, then resolved) it lies under.

    Paths ingest wrote are already absolute and normal: a string prefix test answers
    them; only a path under none of the roots as written (a symbolic link) is resolved.
    """
    if not roots or not isinstance(path, str) or not os.path.isabs(path):
        return path
    for candidate in (os.path.normpath(path), None):
        if candidate is None:
            candidate = str(Path(path).resolve())
        for root in roots:
            if candidate.startswith(root + os.sep):
                return Path(os.path.relpath(candidate, root)).as_posix()
    return path  # outside the root: kept as it is


def index_frame(rows: Iterable[Mapping[str, Any]], *, root: Path | None = None) -> pd.DataFrame:
    """The rows as a frame with exactly :data:`INDEX_COLUMNS`, typed and sorted.

    ``root``: absolute file paths under it are made relative to it.
    """
    import pandas as pd  # here, not at import: the ingest workers only make rows

    records = [{name: row.get(name) for name in INDEX_COLUMNS} for row in rows]
    roots = () if root is None else (os.path.normpath(os.path.abspath(root)), str(root.resolve()))
    for record in records:
        path = record["path"]
        if record["file_size"] is None and isinstance(path, str) and os.path.isabs(path):
            with contextlib.suppress(OSError):  # written after its row was made
                record["file_size"] = os.stat(path).st_size
        record["path"] = _relative(record["path"], roots)
    frame = pd.DataFrame.from_records(records, columns=list(INDEX_COLUMNS))
    for name, kind in INDEX_COLUMNS.items():
        if kind == "date":
            frame[name] = pd.to_datetime(frame[name], format="%Y-%m-%d", errors="coerce")
        elif kind == "string":
            frame[name] = frame[name].map(lambda v: None if v is None or v != v else str(v))
        frame[name] = frame[name].astype(_PANDAS[kind])
    keys = ["patient_pseudonym", "study_uid", "series_uid", "instance_number", "sop_instance_uid"]
    return frame.sort_values(keys, na_position="last", kind="stable").reset_index(drop=True)


def write_index(
    rows: Iterable[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    csv: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Write the index to ``path`` (Parquet; CSV if it ends in ``.csv``); return the files.

    ``csv=True`` writes a CSV copy beside the Parquet file (``<name>.csv``); CSV keeps the
    columns but not the types (integers with gaps read back as floats, dates as text).
    ``root`` (default: the index file's folder): file paths are stored relative to it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = index_frame(rows, root=Path(root) if root is not None else path.parent)
    written: list[Path] = []
    targets: Sequence[Path] = [path]
    if csv and path.suffix.lower() != ".csv":
        targets = [path, path.with_suffix(".csv")]
    for target in targets:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        if target.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False, date_format="%Y-%m-%d")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            types = {k: pa.type_for_alias(alias) for k, alias in _ARROW.items()}
            schema = pa.schema([(n, types[k]) for n, k in INDEX_COLUMNS.items()])
            table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
            pq.write_table(table, tmp)
        os.replace(tmp, target)
        written.append(target)
    return written
