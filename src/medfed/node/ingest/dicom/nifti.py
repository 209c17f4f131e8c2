"""Optional NIfTI conversion of de-identified series, in a BIDS-like layout.

How it runs: :func:`series_volume` takes the datasets of one series — single-frame CT/MR
slices, or one multi-frame file with per-frame functional groups — checks that they form
one regular grid (same orientation, size and pixel spacing, distinct and equally spaced
positions), sorts the slices by ImagePositionPatient projected on the slice normal (the
cross product of the row and column direction cosines), applies the rescale slope and
intercept and builds the affine. DICOM patient coordinates are LPS, NIfTI's are RAS, so
the first two rows of the LPS affine change sign. The array is indexed (column, row,
slice), so the affine's first column is the row direction cosine times the column
spacing, the second the column direction cosine times the row spacing and the third the
step between sorted slices (which also covers a tilted gantry).

:func:`write_series` writes ``sub-<pseudonym>/ses-<n>/anat/sub-<pseudonym>_ses-<n>
[_run-<k>]_<suffix>.nii.gz`` and a JSON sidecar built from a whitelist of acquisition
parameters — no names, IDs, dates or UIDs. :func:`convert_index` converts every CT/MR
series named in the imaging index, numbering each patient's sessions by study date.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel
import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medfed.common.errors import BadRequest

nib: Any = nibabel  # untyped library

__all__ = ["Volume", "bids_path", "convert_index", "series_volume", "sidecar", "write_series"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SIDECAR_KEYS: dict[str, tuple[str, float | None]] = {  # keyword -> (BIDS key, scale)
    "Modality": ("Modality", None),
    "Manufacturer": ("Manufacturer", None),
    "ManufacturerModelName": ("ManufacturersModelName", None),
    "MagneticFieldStrength": ("MagneticFieldStrength", 1.0),
    "BodyPartExamined": ("BodyPartExamined", None),
    "SeriesDescription": ("SeriesDescription", None),
    "SeriesNumber": ("SeriesNumber", 0),  # 0: a whole number
    "ImageType": ("ImageType", None),
    "PatientPosition": ("PatientPosition", None),
    "ScanningSequence": ("ScanningSequence", None),
    "SequenceVariant": ("SequenceVariant", None),
    "MRAcquisitionType": ("MRAcquisitionType", None),
    "RepetitionTime": ("RepetitionTime", 0.001),  # ms -> s
    "EchoTime": ("EchoTime", 0.001),
    "InversionTime": ("InversionTime", 0.001),
    "FlipAngle": ("FlipAngle", 1.0),
    "PixelBandwidth": ("PixelBandwidth", 1.0),
    "ImagingFrequency": ("ImagingFrequency", 1.0),
    "KVP": ("KVP", 1.0),
    "ConvolutionKernel": ("ConvolutionKernel", None),
    "SliceThickness": ("SliceThickness", 1.0),
    "SpacingBetweenSlices": ("SpacingBetweenSlices", 1.0),
}
_CONTRASTS = (("flair", "FLAIR"), (r"t2", "T2w"), (r"t1", "T1w"), (r"pd", "PDw"))


@dataclass(frozen=True)
class Volume:
    """A 3-D image: ``data[i, j, k]`` is column i, row j of sorted slice k; RAS affine."""

    data: NDArray[Any]
    affine: NDArray[np.float64]

    @property
    def zooms(self) -> tuple[float, float, float]:
        lengths = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(lengths[0]), float(lengths[1]), float(lengths[2]))


def _vector(value: Any, size: int, what: str) -> NDArray[np.float64]:
    try:
        vector = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        vector = np.zeros(0)
    if vector.shape != (size,):
        raise BadRequest(f"nifti: the series has no usable {what}")
    return vector


def _macro(ds: Dataset, frame: int | None, group: str, keyword: str) -> Any:
    """``keyword`` from a frame's functional group, else the shared one, else top level."""
    sources = []
    if frame is not None and ds.get("PerFrameFunctionalGroupsSequence"):
        sources.append(ds.PerFrameFunctionalGroupsSequence[frame])
    if ds.get("SharedFunctionalGroupsSequence"):
        sources.append(ds.SharedFunctionalGroupsSequence[0])
    for item in sources:
        macro = item.get(group)
        if macro and macro[0].get(keyword) not in (None, ""):
            return macro[0].get(keyword)
    return ds.get(keyword)


@dataclass(frozen=True)
class _Slice:
    pixels: NDArray[Any]  # (rows, columns)
    position: NDArray[np.float64]
    orientation: NDArray[np.float64]
    spacing: NDArray[np.float64]  # (row spacing, column spacing)
    slope: float
    intercept: float


def _slices(datasets: Sequence[Dataset]) -> list[_Slice]:
    out: list[_Slice] = []
    for ds in datasets:
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise BadRequest("nifti: only greyscale images convert (SamplesPerPixel is not 1)")
        try:
            array = ds.pixel_array
        except Exception as exc:
            raise BadRequest(f"nifti: cannot decode the pixel data: {exc}") from None
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        stack = array.reshape((frames, *array.shape[-2:]))
        for f in range(frames):
            at = f if frames > 1 else None
            measures, transform = "PixelMeasuresSequence", "PixelValueTransformationSequence"
            slope = _macro(ds, at, transform, "RescaleSlope")
            intercept = _macro(ds, at, transform, "RescaleIntercept")
            out.append(
                _Slice(
                    stack[f],
                    _vector(
                        _macro(ds, at, "PlanePositionSequence", "ImagePositionPatient"),
                        3,
                        "ImagePositionPatient",
                    ),
                    _vector(
                        _macro(ds, at, "PlaneOrientationSequence", "ImageOrientationPatient"),
                        6,
                        "ImageOrientationPatient",
                    ),
                    _vector(_macro(ds, at, measures, "PixelSpacing"), 2, "PixelSpacing"),
                    float(slope) if slope not in (None, "") else 1.0,
                    float(intercept) if intercept not in (None, "") else 0.0,
                )
            )
    return out


def _thickness(ds: Dataset) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _macro(ds, None, "PixelMeasuresSequence", keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return 1.0


def series_volume(datasets: Sequence[Dataset]) -> Volume:
    """One series as a :class:`Volume`; :class:`BadRequest` when it is not one regular grid."""
    if not datasets:
        raise BadRequest("nifti: no images in the series")
    slices = _slices(datasets)
    first = slices[0]
    for s in slices[1:]:
        if s.pixels.shape != first.pixels.shape:
            raise BadRequest("nifti: the images of the series differ in size")
        if not np.allclose(s.orientation, first.orientation, atol=1e-4):
            raise BadRequest("nifti: the images of the series differ in orientation")
        if not np.allclose(s.spacing, first.spacing, rtol=1e-4):
            raise BadRequest("nifti: the images of the series differ in pixel spacing")
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row_dir, col_dir)
    slices.sort(key=lambda s: float(s.position @ normal))
    first = slices[0]
    depth = np.array([s.position @ normal for s in slices])
    gaps = np.diff(depth)
    if len(slices) > 1:
        if np.any(gaps <= 1e-4):
            raise BadRequest("nifti: two images of the series share one position")
        if np.ptp(gaps) > 0.01 * float(np.mean(gaps)) + 1e-3:
            raise BadRequest("nifti: the slices of the series are not equally spaced")
        step = (slices[-1].position - slices[0].position) / (len(slices) - 1)
    else:
        step = normal * _thickness(datasets[0])
    affine = np.eye(4)
    affine[:3, 0] = row_dir * first.spacing[1]  # along a row: column index i
    affine[:3, 1] = col_dir * first.spacing[0]  # down a column: row index j
    affine[:3, 2] = step
    affine[:3, 3] = first.position
    stack = np.stack([s.pixels for s in slices], axis=-1)  # (rows, columns, slices)
    slopes = np.array([s.slope for s in slices])
    intercepts = np.array([s.intercept for s in slices])
    data: NDArray[Any] = stack.astype(np.float64) * slopes + intercepts
    rounded = np.round(data)
    lo, hi = np.iinfo(np.int16).min, np.iinfo(np.int16).max
    if np.array_equal(rounded, data) and (
        data.size == 0 or (data.min() >= lo and data.max() <= hi)
    ):
        data = rounded.astype(np.int16)
    else:
        data = data.astype(np.float32)
    return Volume(np.ascontiguousarray(data.transpose(1, 0, 2)), _LPS_TO_RAS @ affine)


def sidecar(ds: Dataset, volume: Volume | None = None) -> dict[str, Any]:
    """The JSON sidecar: whitelisted acquisition parameters only (no identifiers)."""
    out: dict[str, Any] = {}
    for keyword, (key, scale) in _SIDECAR_KEYS.items():
        value = ds.get(keyword)
        if value in (None, ""):
            continue
        if scale is not None:
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            out[key] = int(number) if scale == 0 else round(number * scale, 9)
        elif isinstance(value, str):
            out[key] = value.strip()
        else:
            out[key] = [str(v) for v in value]
    if volume is not None:
        out["Dimensions"] = [int(n) for n in volume.data.shape]
        out["VoxelSize"] = [round(z, 6) for z in volume.zooms]
    out["ConversionSoftware"] = "medfed"
    return out


def _label(text: str) -> str:
    label = re.sub(r"[^A-Za-z0-9]", "", text)
    if not label:
        raise BadRequest(f"nifti: {text!r} gives an empty BIDS label")
    return label


def _suffix(ds: Dataset) -> str:
    modality = str(ds.get("Modality", "") or "").upper()
    if modality != "MR":
        return modality.lower() or "img"
    words = " ".join(
        str(ds.get(k, "") or "")
        for k in ("SeriesDescription", "ProtocolName", "SequenceName", "AcquisitionContrast")
    ).lower()
    for pattern, suffix in _CONTRASTS:
        if re.search(rf"(?<![a-z0-9]){pattern}", words):
            return suffix
    return "mr"


def bids_path(subject: str, session: int | str, suffix: str, run: int | None = None) -> Path:
    """``sub-<s>/ses-<n>/anat/sub-<s>_ses-<n>[_run-<k>]_<suffix>.nii.gz`` (relative)."""
    sub, ses = _label(subject), _label(str(session))
    stem = f"sub-{sub}_ses-{ses}" + (f"_run-{run}" if run is not None else "") + f"_{suffix}"
    return Path(f"sub-{sub}", f"ses-{ses}", "anat", f"{stem}.nii.gz")


def write_series(
    datasets: Sequence[Dataset],
    out_root: Path,
    *,
    subject: str | None = None,
    session: int | str = 1,
    suffix: str | None = None,
    run: int | None = None,
) -> Path:
    """Convert one series and write it with its sidecar; return the ``.nii.gz`` path.

    ``subject`` defaults to the series' PatientID (the pseudonym); ``suffix`` to ``ct``,
    ``T1w``/``T2w``/``FLAIR``/``PDw`` when the MR series description names one, or ``mr``.
    """
    volume = series_volume(datasets)
    first = datasets[0]
    subject = subject if subject is not None else str(first.get("PatientID", "") or "")
    target = Path(out_root) / bids_path(subject, session, suffix or _suffix(first), run)
    target.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(volume.data, volume.affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(volume.affine, code=1)
    image.set_sform(volume.affine, code=1)
    nib.save(image, str(target))
    meta = target.with_name(target.name.removesuffix(".nii.gz") + ".json")
    meta.write_text(json.dumps(sidecar(first, volume), indent=2, sort_keys=True) + "\n")
    return target


def convert_index(
    rows: Iterable[Mapping[str, Any]], out_root: Path, *, dicom_root: Path | None = None
) -> dict[str, Any]:
    """Convert each CT/MR series of the imaging index; ``{"written": [...], "skipped": {}}``.

    Sessions are numbered per patient in order of (acquisition date, study UID); series
    with the same suffix in one session get run numbers in order of series number.
    """
    series: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("modality") in ("CT", "MR") and row.get("series_uid"):
            series.setdefault(str(row["series_uid"]), []).append(row)
    studies: dict[str, dict[str, str]] = {}
    for files in series.values():
        row = files[0]
        dates = studies.setdefault(str(row.get("patient_pseudonym") or ""), {})
        date = str(row.get("acquisition_date") or "")
        dates[str(row["study_uid"])] = min(date, dates.get(str(row["study_uid"]), date))
    sessions = {
        study: n
        for dates in studies.values()
        for n, study in enumerate(sorted(dates, key=lambda s: (dates[s], s)), start=1)
    }
    written: list[str] = []
    skipped: dict[str, str] = {}
    plan: list[tuple[str, list[Path], str, int, str]] = []
    for uid, files in sorted(series.items(), key=lambda kv: (_number(kv[1]), kv[0])):
        paths = [Path(str(r["path"])) for r in files]
        paths = [p if p.is_absolute() or dicom_root is None else dicom_root / p for p in paths]
        try:
            suffix = _suffix(pydicom.dcmread(paths[0], stop_before_pixels=True))
        except (OSError, InvalidDicomError) as exc:
            skipped[uid] = f"nifti: cannot read {paths[0].name}: {exc}"
            continue
        subject = str(files[0].get("patient_pseudonym") or "")
        plan.append((uid, paths, subject, sessions[str(files[0]["study_uid"])], suffix))
    counts = Counter((subject, session, suffix) for _, _, subject, session, suffix in plan)
    runs: Counter[tuple[str, int, str]] = Counter()
    for uid, paths, subject, session, suffix in plan:
        key = (subject, session, suffix)
        runs[key] += 1
        try:
            target = write_series(
                [pydicom.dcmread(p) for p in paths],
                out_root,
                subject=subject,
                session=session,
                suffix=suffix,
                run=runs[key] if counts[key] > 1 else None,
            )
        except (BadRequest, OSError, InvalidDicomError) as exc:
            skipped[uid] = getattr(exc, "message", None) or str(exc)
            continue
        written.append(str(target))
    return {"written": written, "skipped": skipped}


def _number(files: Sequence[Mapping[str, Any]]) -> int:
    number = files[0].get("series_number")
    return int(number) if isinstance(number, int) else 0
