"""Burned-in text: decide whether pixels may carry identifying text, and blank rectangles.

How it runs: :func:`burned_in_reason` looks at one source dataset. Pixels are at risk when
Burned In Annotation is ``YES``, or when it is absent (or not ``NO``) for a modality that
commonly burns text into pixels (US, SC, OT, XC, ES, DOC, GM, SM) or a Secondary Capture
SOP Class. An encapsulated document (PDF, CDA, STL, ...) cannot be checked at all. A file
at risk is quarantined with that reason unless the steward's rectangles file names its
device (Manufacturer + Manufacturer's Model Name, compared without case and surrounding
spaces); then :func:`blank_rectangles` sets those rectangles to 0 in every frame and
sample, Burned In Annotation becomes ``NO`` and the de-identification method gets the
Clean Pixel Data code (113101). Only native (uncompressed) pixel data of 8, 16 or 32 bits
in RGB or MONOCHROME/PALETTE form is cleaned; anything else is quarantined with the reason.

Rectangles file (TOML or JSON), ``[x, y, width, height]`` in pixels::

    [[device]]
    manufacturer = "ACME Ultrasound"
    model = "Vision 5"
    rectangles = [[0, 0, 640, 48], [0, 440, 200, 40]]
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

from medfed.common.errors import BadRequest

__all__ = [
    "AT_RISK_MODALITIES",
    "PixelCleaningError",
    "Rectangles",
    "blank_rectangles",
    "burned_in_reason",
    "load_rectangles",
]

AT_RISK_MODALITIES = frozenset({"US", "SC", "OT", "XC", "ES", "DOC", "GM", "SM"})
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_DOCUMENT_TAG = 0x00420011


class PixelCleaningError(Exception):
    """The pixel data cannot be cleaned here; the message is the quarantine reason."""


@dataclass(frozen=True)
class Rectangles:
    """Steward's pixel-cleaning rectangles per device (manufacturer, model) in lower case."""

    devices: dict[tuple[str, str], tuple[tuple[int, int, int, int], ...]]

    def for_dataset(self, ds: Dataset) -> tuple[tuple[int, int, int, int], ...] | None:
        key = (_norm(ds.get("Manufacturer", "")), _norm(ds.get("ManufacturerModelName", "")))
        return self.devices.get(key)

    def fingerprint(self) -> str:
        return json.dumps(sorted((list(k), [list(r) for r in v]) for k, v in self.devices.items()))


def _norm(value: object) -> str:
    return str(value or "").strip().lower()


def load_rectangles(path: Path) -> Rectangles:
    """Read a rectangles file (TOML or JSON); refuse a malformed one with the reason."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadRequest(f"cannot read rectangles file {path}: {exc.strerror}") from None
    try:
        raw: Any = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise BadRequest(f"rectangles file {path} does not parse: {exc}") from None
    entries = raw.get("device", raw.get("devices")) if isinstance(raw, dict) else raw
    if not isinstance(entries, list):
        raise BadRequest(f"rectangles file {path}: expected a list of [[device]] entries")
    devices: dict[tuple[str, str], tuple[tuple[int, int, int, int], ...]] = {}
    for i, entry in enumerate(entries):
        try:
            rects = tuple((int(x), int(y), int(w), int(h)) for x, y, w, h in entry["rectangles"])
            key = (_norm(entry["manufacturer"]), _norm(entry["model"]))
        except (KeyError, TypeError, ValueError):
            raise BadRequest(
                f"rectangles file {path}: device {i + 1} needs manufacturer, model and "
                "rectangles as [[x, y, width, height], ...]"
            ) from None
        if any(w <= 0 or h <= 0 or x < 0 or y < 0 for x, y, w, h in rects):
            raise BadRequest(f"rectangles file {path}: device {i + 1} has an empty rectangle")
        devices[key] = devices.get(key, ()) + rects
    return Rectangles(devices)


def burned_in_reason(ds: Dataset) -> str | None:
    """Why this dataset's pixels may carry burned-in text, or None if they may not."""
    if _DOCUMENT_TAG in ds:
        return "encapsulated document: its content cannot be checked for identifiers"
    if not any(tag in ds for tag in _PIXEL_TAGS):
        return None
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if burned == "YES":
        return "Burned In Annotation is YES"
    if burned == "NO":
        return None
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if modality in AT_RISK_MODALITIES:
        return f"Burned In Annotation absent for modality {modality} (text often burned in)"
    if sop_class.startswith(_SECONDARY_CAPTURE):
        return "Burned In Annotation absent for a Secondary Capture image"
    return None


def blank_rectangles(
    ds: Dataset, rects: tuple[tuple[int, int, int, int], ...], transfer_syntax: UID
) -> None:
    """Set the rectangles to 0 in ``ds``'s native pixel data (a new PixelData element)."""
    if transfer_syntax.is_compressed or transfer_syntax.is_deflated:
        raise PixelCleaningError(
            f"burned-in text in compressed pixel data ({transfer_syntax.name}) "
            "cannot be cleaned here"
        )
    if 0x7FE00010 not in ds:
        raise PixelCleaningError("only integer pixel data can be cleaned")
    bits = int(ds.get("BitsAllocated", 0) or 0)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if bits not in (8, 16, 32) or (photometric.startswith("YBR_") and photometric != "YBR_FULL"):
        raise PixelCleaningError(
            f"pixel data with {bits} bits allocated and {photometric or 'no'} photometric "
            "interpretation cannot be cleaned here"
        )
    rows, cols = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    planar = int(ds.get("PlanarConfiguration", 0) or 0)
    order = ">" if not transfer_syntax.is_little_endian else "<"
    dtype = np.dtype(f"{order}u{bits // 8}")
    raw = bytes(ds.PixelData)
    count = frames * rows * cols * samples
    if len(raw) < count * dtype.itemsize:
        raise PixelCleaningError("pixel data shorter than its rows, columns and frames say")
    pixels = np.frombuffer(raw, dtype=dtype, count=count).copy()
    shape = (
        (frames, samples, rows, cols) if planar and samples > 1 else (frames, rows, cols, samples)
    )
    pixels = pixels.reshape(shape)
    for x, y, w, h in rects:
        if planar and samples > 1:
            pixels[:, :, y : y + h, x : x + w] = 0
        else:
            pixels[:, y : y + h, x : x + w, :] = 0
    data = pixels.tobytes() + raw[count * dtype.itemsize :]
    ds[0x7FE00010] = DataElement(0x7FE00010, ds[0x7FE00010].VR, data)
    ds.BurnedInAnnotation = "NO"
