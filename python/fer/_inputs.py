"""Turning what users hand us into the arrays the native core takes.

Images go to Rust as C-contiguous float32 ``(N, 2304)`` in [0, 1]; labels as
uint8 0-6. Every rejection names the problem (and the row where there is one).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from fer.data import IMAGE_SHAPE, NUM_CLASSES, check_frame, labels_from, parse_pixels, row_label
from fer.errors import FerValueError

PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]

ACCEPTED = (
    "a DataFrame with a 'pixels' column, a Series or list of pixel strings, or an array of shape "
    "(N, 48, 48), (N, 48, 48, 1), (N, 2304) or (48, 48): uint8 0-255 or floats in [0, 1]"
)


def _is_string_sequence(values: Any) -> bool:
    return len(values) > 0 and all(isinstance(v, str) for v in values[:8])


def as_images(x: Any) -> tuple[npt.NDArray[np.float32], pd.Index | None]:
    """Return ``(images, index)``: float32 (N, 2304) in [0, 1], plus the pandas
    index when ``x`` was pandas (else None)."""
    index = None
    if isinstance(x, pd.DataFrame):
        if "pixels" not in x.columns:
            raise FerValueError(
                f"the DataFrame has no 'pixels' column; found columns {list(map(str, x.columns))}"
            )
        index = x.index
        arr: np.ndarray = parse_pixels(x["pixels"])
    elif isinstance(x, pd.Series):
        index = x.index
        if x.dtype.kind in "OSUT" or isinstance(x.dtype, pd.StringDtype):
            arr = parse_pixels(x)
        else:
            raise TypeError(f"a Series must hold pixel strings, got dtype {x.dtype}; {ACCEPTED}")
    elif isinstance(x, str):
        arr = parse_pixels([x])
    elif isinstance(x, (list, tuple)) and len(x) > 0 and isinstance(x[0], str):
        arr = parse_pixels(list(x))
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # ragged nested lists and the like
            raise FerValueError(f"cannot read the images as an array ({exc}); expected {ACCEPTED}") from None
        if arr.dtype == object:
            flat = arr.ravel()
            if arr.ndim == 1 and _is_string_sequence(flat):
                arr = parse_pixels(flat)
            else:
                raise TypeError(f"object arrays are accepted only as 1-D pixel strings; expected {ACCEPTED}")
    if arr.dtype.kind in "SU":
        arr = parse_pixels(arr.astype(object).ravel())
    if arr.dtype.kind == "c":
        raise TypeError(f"complex images are not supported (dtype {arr.dtype}); expected {ACCEPTED}")
    if arr.dtype.kind == "b":
        raise TypeError(f"boolean images are not supported; expected {ACCEPTED}")
    if arr.dtype.kind not in "uif":
        raise TypeError(f"images have unsupported dtype {arr.dtype}; expected {ACCEPTED}")
    arr = _to_batch(arr)
    if arr.shape[0] == 0:
        raise FerValueError("no images given (empty input)")
    return _scaled(arr, index), index


def _to_batch(arr: np.ndarray) -> np.ndarray:
    shape = arr.shape
    if shape == IMAGE_SHAPE:
        return arr.reshape(1, PIXELS)
    if arr.ndim == 3 and shape[1:] == IMAGE_SHAPE:
        return arr.reshape(shape[0], PIXELS)
    if arr.ndim == 4 and shape[1:] == (*IMAGE_SHAPE, 1):
        return arr.reshape(shape[0], PIXELS)
    if arr.ndim == 2 and shape[1] == PIXELS:
        return arr
    raise FerValueError(f"images have shape {shape}; expected {ACCEPTED}")


def _scaled(arr: np.ndarray, index: pd.Index | None) -> npt.NDArray[np.float32]:
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr, dtype=np.float32) * np.float32(1 / 255)
    if arr.dtype.kind in "iu":
        bad = (arr < 0) | (arr > 255)
        if bad.any():
            pos = int(np.flatnonzero(bad.any(axis=1))[0])
            raise FerValueError(
                f"image at row {row_label(index, pos)} has integer values outside 0-255 "
                f"(min {arr[pos].min()}, max {arr[pos].max()})"
            )
        return arr.astype(np.float32) * np.float32(1 / 255)
    finite = np.isfinite(arr)
    if not finite.all():
        pos = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise FerValueError(f"image at row {row_label(index, pos)} contains NaN or infinity")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 1:
        per_row = (arr < 0) | (arr > 1)
        pos = int(np.flatnonzero(per_row.any(axis=1))[0])
        hint = " (pixels 0-255? pass them as uint8, or divide by 255)" if hi > 1 else ""
        raise FerValueError(
            f"float images must be in [0, 1]; image at row {row_label(index, pos)} "
            f"has values in [{arr[pos].min():g}, {arr[pos].max():g}]{hint}"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


def _flat_labels(y: Any) -> npt.NDArray[Any]:
    """Labels as given, a column vector (N, 1), or Keras-style one-hot rows
    (N, 7) as class indices."""
    arr = np.asarray(y)
    if arr.ndim == 0:
        return arr.reshape(1)
    if arr.ndim == 2 and arr.shape[1] == 1:
        return arr.ravel()
    if arr.ndim == 2 and arr.shape[1] == NUM_CLASSES and arr.dtype.kind in "iufb":
        one_hot = ((arr == 0) | (arr == 1)).all() and (arr.sum(axis=1) == 1).all()
        if one_hot:
            return arr.argmax(axis=1)
        raise FerValueError(
            f"labels of shape {arr.shape} are not one-hot rows (one 1 and six 0s each); "
            "pass class indices 0-6, e.g. y.argmax(axis=1) for probabilities"
        )
    if arr.ndim != 1:
        raise FerValueError(f"labels must be 1-D class indices 0-6 (or one-hot rows of 7), got shape {arr.shape}")
    return arr


def as_xy(data: Any, y: Any = None) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    """Images and labels from a FER DataFrame (``emotion`` + ``pixels``), an
    ``(x, y)`` pair, or ``x`` and ``y`` given separately."""
    if y is None and isinstance(data, tuple) and len(data) == 2:
        data, y = data
    if y is None:
        if isinstance(data, pd.DataFrame):
            check_frame(data)
            x, index = as_images(data)
            return x, labels_from(data["emotion"].to_numpy(), index)
        raise TypeError(
            "expected a FER DataFrame (columns 'emotion' and 'pixels') or an (x, y) pair of images and labels, "
            f"got {type(data).__name__}"
        )
    x, index = as_images(data)
    if isinstance(y, (pd.Series, pd.Index)):
        labels = labels_from(y.to_numpy(), y.index if isinstance(y, pd.Series) else None, what="label")
    else:
        labels = labels_from(_flat_labels(y), index, what="label")
    if len(labels) != len(x):
        raise FerValueError(f"got {len(x)} images but {len(labels)} labels")
    return x, labels
