"""Image models: the declared image input and the one preprocessing of DICOM pixel data.

How it runs: an image model is registered with an :class:`ImageSpec` — the input's shape
``[C, H, W]`` after the batch axis (the hub checks it against the ONNX graph's input,
:func:`medfed.algorithms.validation.model_check.check_model`), an optional intensity
window and the per-channel mean and standard deviation of the last step. At the node,
the validation step (:mod:`.local`) selects the test population from the dataset's
imaging index (one row per de-identified DICOM file; ``path`` relative to the index's
folder) and calls :func:`load_images`, which for each file, in the node's process:

1. resolves the path inside the index's folder (a path that leaves it is refused) and
   reads it with pydicom (``pixel_array``: the decoders installed at the node);
2. takes the middle frame of a multi-frame image;
3. applies ``RescaleSlope`` and ``RescaleIntercept`` (single-sample images);
4. maps intensities to ``[0, 1]``: through the window ``[centre - width/2, centre +
   width/2]`` (clipped) when the spec has one, else by the image's own minimum and
   maximum (a constant image becomes 0); ``MONOCHROME1`` is inverted so that bright
   means dense in both photometric interpretations;
5. makes the channels: a grey image is repeated to ``C = 3``, a colour image averaged to
   ``C = 1``;
6. resizes every channel to ``H x W`` by bilinear interpolation with half-pixel centres
   (the same values as ``torch.nn.functional.interpolate(mode="bilinear",
   align_corners=False)``); the same size leaves the image as it is;
7. normalises each channel: ``(v - mean[c]) / std[c]``.

The result, ``[N, C, H, W]`` float32, goes into the sandbox's scratch folder as an
``.npy`` file and is scored by the same runner as a feature matrix
(:mod:`medfed.node.executors.onnx_process`). A file that cannot be read fails the run
with :class:`~medfed.algorithms.validation.scoring.ModelFailed`, whose text names the
kind of problem only — never a path, a value or a count.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ImageSpec", "Window", "load_images", "preprocess", "resize_bilinear"]

MAX_SIDE = 4096
FloatImage = npt.NDArray[np.float64]


class Window(BaseModel):
    """An intensity window (after rescale slope and intercept): centre and width."""

    model_config = ConfigDict(extra="forbid")

    center: float
    width: float = Field(gt=0)


class ImageSpec(BaseModel):
    """An image model's declared input (after the batch axis) and its preprocessing."""

    model_config = ConfigDict(extra="forbid")

    shape: list[int] = Field(min_length=3, max_length=3, description="[C, H, W], C 1 or 3")
    window: Window | None = None
    mean: list[float] = Field(default_factory=lambda: [0.0], min_length=1, max_length=3)
    std: list[float] = Field(default_factory=lambda: [1.0], min_length=1, max_length=3)

    @model_validator(mode="after")
    def _consistent(self) -> ImageSpec:
        c, h, w = self.shape
        if c not in (1, 3):
            raise ValueError(f"an image has 1 or 3 channels, not {c}")
        if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
            raise ValueError(f"image height and width must lie in 1..{MAX_SIDE}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, c):
                raise ValueError(f"give one {name} or one per channel ({c})")
        if any(s <= 0 for s in self.std):
            raise ValueError("std must be positive")
        return self


def _axis(n_in: int, n_out: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], FloatImage]:
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    x = np.clip(x, 0.0, n_in - 1)
    lo = np.floor(x).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, x - lo


def resize_bilinear(image: FloatImage, height: int, width: int) -> FloatImage:
    """``[C, h, w]`` to ``[C, height, width]``, bilinear, half-pixel centres."""
    lo, hi, t = _axis(image.shape[1], height)
    rows = image[:, lo, :] * (1.0 - t)[None, :, None] + image[:, hi, :] * t[None, :, None]
    lo, hi, t = _axis(image.shape[2], width)
    out = rows[:, :, lo] * (1.0 - t)[None, None, :] + rows[:, :, hi] * t[None, None, :]
    return np.asarray(out, dtype=np.float64)


def _pixels(ds: Any) -> tuple[FloatImage, bool]:
    """The image's pixels as ``[C, h, w]`` float64 (rescaled), and whether it is colour."""
    array = np.asarray(ds.pixel_array)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        array = array[frames // 2]
    if samples == 1:
        if array.ndim != 2:
            raise ValueError("not a 2-d image")
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        return (array.astype(np.float64) * slope + intercept)[None], False
    if array.ndim != 3 or array.shape[-1] != samples:
        raise ValueError("not a colour image of the declared samples")
    return np.moveaxis(array.astype(np.float64), -1, 0), True


def preprocess(ds: Any, spec: ImageSpec) -> npt.NDArray[np.float32]:
    """One pydicom dataset as the model's ``[C, H, W]`` input (see the module text)."""
    pixels, colour = _pixels(ds)
    if spec.window is not None:
        low = spec.window.center - spec.window.width / 2
        unit = np.clip((pixels - low) / spec.window.width, 0.0, 1.0)
    else:
        span = float(pixels.max() - pixels.min())
        unit = (pixels - pixels.min()) / span if span > 0 else np.zeros_like(pixels)
    if not colour and str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        unit = 1.0 - unit
    channels, height, width = spec.shape
    if channels == 3 and unit.shape[0] == 1:
        unit = np.repeat(unit, 3, axis=0)
    elif channels == 1 and unit.shape[0] != 1:
        unit = unit.mean(axis=0, keepdims=True)
    if unit.shape[1:] != (height, width):
        unit = resize_bilinear(unit, height, width)
    mean = np.asarray(spec.mean * (channels // len(spec.mean)), dtype=np.float64)
    std = np.asarray(spec.std * (channels // len(spec.std)), dtype=np.float64)
    return ((unit - mean[:, None, None]) / std[:, None, None]).astype(np.float32)


def load_images(paths: Sequence[str], root: Path, spec: ImageSpec) -> npt.NDArray[np.float32]:
    """The ``[N, C, H, W]`` tensor of the files at ``paths`` (relative to ``root``)."""
    import pydicom

    from medfed.algorithms.validation.scoring import ModelFailed

    base = root.resolve()
    out = np.empty((len(paths), *spec.shape), dtype=np.float32)
    for i, rel in enumerate(paths):
        path = (base / str(rel)).resolve()
        if not path.is_relative_to(base):
            raise ModelFailed("an image of the test population lies outside the imaging index")
        try:
            ds = pydicom.dcmread(path)
            out[i] = preprocess(ds, spec)
        except Exception as exc:  # the file's content or path must not leave: its kind only
            raise ModelFailed(
                "an image of the test population could not be read as a DICOM image "
                f"({type(exc).__name__})"
            ) from None
    return out
