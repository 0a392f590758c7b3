"""Plots for the study's workflow: learning curves, confusion matrices, faces.

matplotlib is an optional extra (``pip install matplotlib`` or
``pip install 'fer[plot]'``); it is imported only when a plot is drawn, so
``import fer`` works without it.

Every function returns the :class:`matplotlib.figure.Figure` it drew on.
The figures are made with :mod:`matplotlib.pyplot`, so they behave like any
other figure: in Jupyter (inline backend) the figure shows below the cell -
assign the result (``fig = fer.show_faces(...)``) or end the line with ``;``
so it is not shown twice; in a script call ``fig.savefig("out.png")`` or
``matplotlib.pyplot.show()``; on a machine without a display matplotlib uses
its headless Agg backend by itself. Close figures you no longer need with
``matplotlib.pyplot.close(fig)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fer.data import EMOTIONS, IMAGE_SHAPE, NUM_CLASSES
from fer.errors import FerValueError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_history", "plot_confusion_matrix", "show_faces"]

NORMALIZE = (False, True, "true", "pred", "all")


def _pyplot() -> Any:
    """matplotlib.pyplot, or an ImportError that says how to get it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "fer's plots need matplotlib, which is not installed: pip install matplotlib "
            "(or pip install 'fer[plot]')"
        ) from exc
    return plt


# --------------------------------------------------------------- history
def _history_frame(obj: Any, what: str = "history_or_model") -> pd.DataFrame:
    history = getattr(obj, "history", obj)  # a fer.Model carries .history
    if isinstance(history, Mapping):
        try:
            history = pd.DataFrame(dict(history))
        except ValueError as exc:
            raise FerValueError(f"{what}: cannot turn the mapping into a history table ({exc})") from None
    if not isinstance(history, pd.DataFrame):
        raise TypeError(
            f"{what} must be a fer.Model, its history DataFrame, or a dict of columns; got {type(obj).__name__}"
        )
    if len(history) == 0:
        raise FerValueError(f"{what}: the history is empty; train the model first (fer.train or Model.fit)")
    return history


def _metric_series(history: pd.DataFrame, column: str) -> np.ndarray | None:
    if column not in history.columns:
        return None
    values = pd.to_numeric(history[column], errors="coerce").to_numpy(dtype=float)
    return None if np.isnan(values).all() else values


def plot_history(
    history_or_model: Any,
    metrics: str | Iterable[str] = ("loss", "accuracy"),
) -> "Figure":
    """Plot learning curves: one panel per metric, training and validation.

    Parameters
    ----------
    history_or_model:
        A trained :class:`fer.Model`, its :attr:`~fer.Model.history`
        DataFrame (columns ``epoch``, ``loss``, ``accuracy``, ``val_loss``,
        ``val_accuracy``, ...), or a dict of such columns. A dict mapping
        names to models or histories (``{"seed3x3": m1, "fer_vgg": m2}``)
        draws every model in the same panels, one colour each.
    metrics:
        Metrics to plot, one panel each: ``"loss"`` and ``"accuracy"`` draw
        the training curve and, when recorded, the ``val_`` curve (dashed);
        any other history column (``"learning_rate"``, ``"seconds"``,
        ``"val_loss"``) is drawn as it is.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, one Axes per metric (``fig.axes``).

    Raises
    ------
    FerValueError
        Empty history, no metrics, or a metric the history does not have
        (the message lists the ones it has).
    ImportError
        matplotlib is not installed.
    """
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = list(metrics)
    if not metrics:
        raise FerValueError("metrics is empty; name at least one, e.g. ('loss', 'accuracy')")
    bad = [m for m in metrics if not isinstance(m, str)]
    if bad:
        raise TypeError(f"metrics must be column names (strings), got {bad!r}")

    runs: dict[str, pd.DataFrame]
    is_collection = isinstance(history_or_model, Mapping) and len(history_or_model) > 0 and all(
        isinstance(v, pd.DataFrame) or hasattr(v, "history") for v in history_or_model.values()
    )
    if is_collection:
        runs = {str(k): _history_frame(v, f"history_or_model[{k!r}]") for k, v in history_or_model.items()}
    else:
        runs = {"": _history_frame(history_or_model)}

    for name, history in runs.items():
        for metric in metrics:
            if _metric_series(history, metric) is None and _metric_series(history, f"val_{metric}") is None:
                available = [c for c in history.columns if c != "epoch" and _metric_series(history, c) is not None]
                where = f" of {name!r}" if name else ""
                raise FerValueError(
                    f"the history{where} has no values for metric {metric!r}; available: {', '.join(available)}"
                )

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.0 * len(metrics), 3.6), squeeze=False)
    from matplotlib.ticker import MaxNLocator

    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0", "C1", "C2", "C3"])
    all_epochs = sorted(
        {float(e) for h in runs.values() for e in (h["epoch"] if "epoch" in h.columns else range(1, len(h) + 1))}
    )
    for i, metric in enumerate(metrics):
        ax = axes[0][i]
        for j, (name, history) in enumerate(runs.items()):
            epochs = (
                history["epoch"].to_numpy(dtype=float)
                if "epoch" in history.columns
                else np.arange(1, len(history) + 1, dtype=float)
            )
            color = colors[j % len(colors)]
            prefix = f"{name} " if name else ""
            is_val = metric.startswith("val_")
            train = _metric_series(history, metric)
            if train is not None:
                style = "--" if is_val else "-"
                label = f"{prefix}{'validation' if is_val else 'train'}"
                ax.plot(epochs, train, marker="o", markersize=3, linestyle=style, color=color, label=label)
            if not is_val:
                val = _metric_series(history, f"val_{metric}")
                if val is not None:
                    ax.plot(epochs, val, marker="o", markersize=3, linestyle="--", color=color, label=f"{prefix}validation")
        ax.set_title(metric.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(all_epochs) == 1:  # a single epoch: centre it rather than zoom in on it
            ax.set_xlim(all_epochs[0] - 1, all_epochs[0] + 1)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


# ------------------------------------------------------ confusion matrix
def _confusion_counts(report_or_matrix: Any) -> tuple[np.ndarray, list[str], list[str]]:
    matrix = getattr(report_or_matrix, "confusion_matrix", report_or_matrix)  # an EvaluationReport
    rows = cols = list(EMOTIONS)
    if isinstance(matrix, pd.DataFrame):
        if matrix.shape == (NUM_CLASSES, NUM_CLASSES):
            rows, cols = [str(v) for v in matrix.index], [str(v) for v in matrix.columns]
        values = matrix.to_numpy()
    elif isinstance(matrix, (np.ndarray, list, tuple)):
        values = np.asarray(matrix)
    else:
        raise TypeError(
            "report_or_matrix must be a fer.EvaluationReport, a DataFrame or a 7x7 array, "
            f"got {type(report_or_matrix).__name__}"
        )
    if values.shape != (NUM_CLASSES, NUM_CLASSES):
        raise FerValueError(
            f"a confusion matrix must be 7x7 (rows: true emotion, columns: predicted), got shape {values.shape}"
        )
    try:
        values = values.astype(float)
    except (TypeError, ValueError):
        raise FerValueError(f"the confusion matrix must hold numbers, got dtype {values.dtype}") from None
    if not np.isfinite(values).all() or (values < 0).any():
        raise FerValueError("the confusion matrix must hold finite counts >= 0")
    return values, rows, cols


def plot_confusion_matrix(
    report_or_matrix: Any,
    normalize: bool | str = False,
    ax: "Axes | None" = None,
) -> "Figure":
    """Draw a confusion matrix as a heat map, each cell annotated.

    Parameters
    ----------
    report_or_matrix:
        A :class:`fer.EvaluationReport` (from :meth:`fer.Model.evaluate`),
        its ``confusion_matrix`` DataFrame, or a 7x7 array of counts; rows
        are the true emotion, columns the predicted one.
    normalize:
        ``False`` annotates counts. ``True`` or ``"true"`` divides each row
        by its total (the diagonal is then each emotion's recall),
        ``"pred"`` each column (precision), ``"all"`` the whole matrix.
        Rows or columns with no images stay 0.
    ax:
        Axes to draw on; by default a new figure is made.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the heat map (``ax.figure`` when ``ax`` is given).

    Raises
    ------
    FerValueError
        Not 7x7, negative or non-finite values, or an unknown ``normalize``.
    """
    if isinstance(normalize, np.bool_):
        normalize = bool(normalize)
    if not any(normalize is v or (isinstance(v, str) and normalize == v) for v in NORMALIZE):
        raise FerValueError(f"normalize must be False, True, 'true', 'pred' or 'all', got {normalize!r}")
    counts, rows, cols = _confusion_counts(report_or_matrix)
    if normalize is True:
        normalize = "true"
    values = counts
    if normalize:
        with np.errstate(divide="ignore", invalid="ignore"):
            if normalize == "true":
                totals = counts.sum(axis=1, keepdims=True)
            elif normalize == "pred":
                totals = counts.sum(axis=0, keepdims=True)
            else:
                totals = np.array(counts.sum())
            values = np.where(totals > 0, counts / totals, 0.0)

    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 5.6), layout="constrained")
    else:
        fig = ax.figure
    vmax = 1.0 if normalize else max(float(values.max()), 1.0)
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    integer_counts = not normalize and np.array_equal(values, np.round(values))
    for i in range(NUM_CLASSES):
        for j in range(NUM_CLASSES):
            v = values[i, j]
            text = f"{int(v)}" if integer_counts else f"{v:.2f}"
            ax.text(
                j, i, text, ha="center", va="center", fontsize=8,
                color="white" if v > 0.5 * vmax else "black",
            )
    ax.set_xticks(range(NUM_CLASSES), cols, rotation=45, ha="right")
    ax.set_yticks(range(NUM_CLASSES), rows)
    ax.set_xlabel("predicted emotion")
    ax.set_ylabel("true emotion")
    titles = {"true": " (rows sum to 1)", "pred": " (columns sum to 1)", "all": " (fractions of all)"}
    ax.set_title("Confusion matrix" + (titles[normalize] if normalize else ""))
    return fig


# ------------------------------------------------------------------ faces
def _names(values: Any, what: str, count: int) -> list[str]:
    """Emotion names from labels 0-6, names, or (N, 7) probabilities."""
    if isinstance(values, pd.DataFrame):
        values = values.to_numpy()
    elif isinstance(values, (pd.Series, pd.Index)):
        values = values.to_numpy()
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == NUM_CLASSES and arr.dtype.kind in "fiu":
        arr = arr.argmax(axis=1)  # probabilities, e.g. from predict_proba
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise FerValueError(f"{what} must be one label per image (or (N, 7) probabilities), got shape {arr.shape}")
    if len(arr) != count:
        raise FerValueError(f"got {count} images but {len(arr)} {what}")
    names: list[str] = []
    for pos, v in enumerate(arr.tolist()):
        if isinstance(v, str) and v in EMOTIONS:
            names.append(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() and 0 <= v < NUM_CLASSES:
            names.append(EMOTIONS[int(v)])
        else:
            raise FerValueError(
                f"{what}[{pos}] is {v!r}; expected a label 0-6 or an emotion name ({', '.join(EMOTIONS)})"
            )
    return names


def show_faces(
    x: Any,
    labels: Any = None,
    predictions: Any = None,
    ncols: int = 8,
    max_faces: int = 32,
) -> "Figure":
    """Show faces in a grid, titled with their true and/or predicted emotion.

    Parameters
    ----------
    x:
        Images in any form :meth:`fer.Model.predict` accepts: a FER DataFrame
        (``pixels`` column), pixel strings, or an array of shape (N, 48, 48),
        (N, 48, 48, 1), (N, 2304) or (48, 48), uint8 0-255 or floats in [0, 1].
    labels:
        True emotions, one per image: labels 0-6 or emotion names. When
        ``x`` is a DataFrame with an ``emotion`` column it is used by default
        (pass ``labels=False`` to leave the true emotion out).
    predictions:
        Predicted emotions: labels 0-6, names, or ``(N, 7)`` probabilities
        (as from :meth:`fer.Model.predict_proba`). With ``labels`` too, a
        face's title is red when the prediction is wrong, green when right.
    ncols:
        Faces per row.
    max_faces:
        Show at most this many (the first ones).

    Returns
    -------
    matplotlib.figure.Figure
        The figure, one Axes per face shown.
    """
    from fer._inputs import as_images

    for name, value in (("ncols", ncols), ("max_faces", max_faces)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise FerValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if labels is None and isinstance(x, pd.DataFrame) and "emotion" in x.columns:
        labels = x["emotion"]
    if labels is False:
        labels = None
    # Only the faces shown are parsed (a whole FER2013 frame is 330 MB as floats).
    total = len(x) if isinstance(x, (pd.DataFrame, pd.Series)) else None
    if total is not None:
        x = x.iloc[: int(max_faces)]
    images, _ = as_images(x)
    n = len(images)
    true_names = _names(labels, "labels", total or n)[:n] if labels is not None else None
    pred_names = _names(predictions, "predictions", total or n)[:n] if predictions is not None else None

    shown = min(n, int(max_faces))
    cols = min(int(ncols), shown)
    rows = math.ceil(shown / cols)
    titled = true_names is not None or pred_names is not None
    lines = (true_names is not None) + (pred_names is not None)
    plt = _pyplot()
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.35 * cols, (1.35 + 0.22 * lines) * rows), squeeze=False
    )
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k >= shown:
            continue
        ax.imshow(images[k].reshape(IMAGE_SHAPE), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        if not titled:
            continue
        parts, color = [], "black"
        if true_names is not None:
            parts.append(true_names[k] if pred_names is None else f"true: {true_names[k]}")
        if pred_names is not None:
            parts.append(pred_names[k] if true_names is None else f"pred: {pred_names[k]}")
            if true_names is not None:
                color = "tab:green" if pred_names[k] == true_names[k] else "red"
        ax.set_title("\n".join(parts), fontsize=8, color=color)
    fig.tight_layout()
    return fig
