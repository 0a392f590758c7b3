"""Getting FER2013-style data in: pixel strings to arrays, and the splits."""

from __future__ import annotations

import numbers
from importlib import resources
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from fer import _core
from fer.errors import FerValueError

#: The seven emotion names in label order (label ``i`` is ``EMOTIONS[i]``).
EMOTIONS: tuple[str, ...] = tuple(_core.EMOTIONS)
NUM_CLASSES = len(EMOTIONS)
IMAGE_SHAPE = (48, 48)
REQUIRED_COLUMNS = ("emotion", "pixels")
TEST_USAGES = ("PublicTest", "PrivateTest")


def parse_pixels(pixels: pd.Series | Any) -> npt.NDArray[np.uint8]:
    """Parse FER2013 pixel strings into a ``(N, 48, 48)`` uint8 array.

    Parameters
    ----------
    pixels:
        A pandas Series, list, tuple or 1-D object array of strings, each
        holding 2,304 space-separated integers 0-255 (a 48x48 face, row-major),
        as in the ``pixels`` column of the FER2013 CSV. A DataFrame with a
        ``pixels`` column is accepted too.

    Returns
    -------
    numpy.ndarray
        C-contiguous ``uint8`` array of shape ``(N, 48, 48)``. Parsing runs in
        Rust on all cores.

    Raises
    ------
    FerValueError
        Naming the row (its index label) and what is wrong: a wrong number of
        values, a token that is not an integer, a value outside 0-255, an
        empty string, a missing value (NaN/None/pd.NA) or a non-string.
    TypeError
        When ``pixels`` is none of the accepted containers.
    """
    index = None
    if isinstance(pixels, pd.DataFrame):
        if "pixels" not in pixels.columns:
            raise FerValueError(
                f"the DataFrame has no 'pixels' column; found columns {list(map(str, pixels.columns))}"
            )
        pixels = pixels["pixels"]
    if isinstance(pixels, pd.Series):
        index = pixels.index
        rows = pixels.to_numpy(dtype=object)
    elif isinstance(pixels, str):
        rows = [pixels]
    elif isinstance(pixels, np.ndarray):
        if pixels.ndim != 1:
            raise FerValueError(
                f"parse_pixels expects a 1-D sequence of strings, got an array of shape {pixels.shape}"
            )
        rows = pixels.astype(object, copy=False)
    elif isinstance(pixels, (list, tuple)):
        rows = pixels
    else:
        raise TypeError(
            "parse_pixels expects a pandas Series, list or array of pixel strings, "
            f"got {type(pixels).__name__}"
        )
    return _core.parse_pixels(list(rows) if not isinstance(rows, list) else rows, index)


def check_frame(df: pd.DataFrame) -> None:
    """Raise a clear error unless ``df`` looks like FER2013 data."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise FerValueError(
            f"the DataFrame is missing column(s) {missing}; found columns {list(map(str, df.columns))}"
        )


def row_label(index: Any, pos: int) -> str:
    """The repr of row ``pos``'s index label (its position without an index)."""
    if index is None:
        return repr(pos)
    label = index[pos]
    return repr(label.item() if isinstance(label, np.generic) else label)


def labels_from(values: Any, index: Any = None, what: str = "emotion") -> npt.NDArray[np.uint8]:
    """Validate emotion labels (integers 0-6) and return them as uint8.
    Errors name the first bad row (by ``index`` label when given)."""
    noun = "labels" if what == "label" else f"{what} labels"
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise FerValueError(f"{noun} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "b":
        raise FerValueError(f"{noun} must be integers 0-6, got booleans")
    original = arr
    if arr.dtype.kind not in "iuf":
        # Object/string columns (a CSV with a stray word, say): by value, so
        # the first bad row can be named.
        try:
            arr = pd.to_numeric(pd.Series(arr, copy=False), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            raise FerValueError(f"{noun} must be integers 0-6, got dtype {arr.dtype}") from None
    if arr.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (arr < 0) | (arr >= NUM_CLASSES)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            value = original[pos]
            value = value.item() if isinstance(value, np.generic) else value
            raise FerValueError(f"{what} at row {row_label(index, pos)}: {value!r} is not an integer label 0-6 (the 7 emotions)")
        arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= NUM_CLASSES)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise FerValueError(f"{what} at row {row_label(index, pos)}: {arr[pos].item()!r} is outside 0-6 (the 7 emotions)")
    return arr.astype(np.uint8)


class Split(NamedTuple):
    """The parts of a FER DataFrame: ``train``, ``validation`` and ``test``."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def split(df: pd.DataFrame, validation: float = 0.1, seed: int = 0) -> Split:
    """Split a FER2013 DataFrame by its ``Usage`` column.

    ``Training`` rows give the training part, from which a ``validation``
    fraction is carved out, stratified by ``emotion`` (deterministic for a
    given ``seed``). ``PublicTest`` and ``PrivateTest`` rows form the test
    part. Without a ``Usage`` column every row counts as Training. Rows keep
    their original index labels and order.

    Parameters
    ----------
    df:
        DataFrame with ``emotion`` and ``pixels`` (and usually ``Usage``).
    validation:
        Fraction of the Training rows to hold out, in ``[0, 1)``.
    seed:
        Seed for the stratified draw.

    Returns
    -------
    Split
        A named tuple ``(train, validation, test)`` of DataFrames.
    """
    check_frame(df)
    if isinstance(validation, (bool, np.bool_)) or not isinstance(validation, numbers.Real) or not 0 <= validation < 1:
        raise FerValueError(f"validation must be a fraction in [0, 1), got {validation!r}")
    if "Usage" in df.columns:
        usage = df["Usage"].astype(str)
        unknown = sorted(set(usage.unique()) - {"Training", *TEST_USAGES})
        if unknown:
            raise FerValueError(
                f"column 'Usage' has unknown value(s) {unknown}; expected 'Training', 'PublicTest' or 'PrivateTest'"
            )
        training = df[usage == "Training"]
        test = df[usage.isin(TEST_USAGES)]
    else:
        training, test = df, df.iloc[0:0]
    labels = labels_from(training["emotion"].to_numpy(), training.index)
    held = stratified_holdout(labels, validation, seed)
    return Split(training[~held], training[held], test)


def stratified_holdout(labels: npt.NDArray[np.integer], fraction: float, seed: int) -> npt.NDArray[np.bool_]:
    """Boolean mask holding out ``round(fraction * count)`` rows of each label,
    drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    if fraction > 0:
        for label in range(NUM_CLASSES):
            members = np.flatnonzero(labels == label)
            take = int(round(len(members) * fraction))
            if take:
                held[rng.choice(members, size=take, replace=False)] = True
    return held


def load_sample() -> pd.DataFrame:
    """Load the bundled FER2013 sample (998 rows, all 7 classes, Training and
    PublicTest), as ``pd.read_csv`` would load the full file."""
    path = resources.files("fer") / "data" / "fer2013_sample.csv.gz"
    with resources.as_file(path) as p:
        return pd.read_csv(p)
