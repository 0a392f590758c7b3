"""The one-call functions: ``fer.train``, ``fer.predict``, ``fer.predict_proba``."""

from __future__ import annotations

import os
from typing import Any, Iterable

import numpy as np
import numpy.typing as npt
import pandas as pd

from fer.errors import FerValueError
from fer.model import Model, load


def train(
    data: Any,
    model: str | dict = "seed3x3",
    *,
    epochs: int = 10,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    optimizer: str = "adam",
    validation: float = 0.1,
    seed: int = 0,
    progress: bool = True,
    callbacks: Iterable[Any] | None = None,
    **model_options: Any,
) -> Model:
    """Build a model and train it; returns the trained :class:`fer.Model`.

    ``data`` is a FER DataFrame (``emotion``, ``pixels``, optional ``Usage``;
    only Training rows train) or an ``(x, y)`` pair. ``model`` names a preset
    (:func:`fer.models`); ``model_options`` go to the preset (e.g.
    ``pooling="same"``) except the training keywords of :meth:`Model.fit`
    (``label_smoothing``, ``class_weight``, ``weight_decay``, ``momentum``,
    ``nesterov``, ``validation_data``, ``time_limit``), which go to ``fit``.
    """
    fit_keys = {"label_smoothing", "class_weight", "weight_decay", "momentum", "nesterov", "validation_data", "time_limit"}
    fit_options = {k: model_options.pop(k) for k in list(model_options) if k in fit_keys}
    net = Model(model, seed=seed, **model_options)
    return net.fit(
        data,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        optimizer=optimizer,
        validation=validation,
        seed=seed,
        progress=progress,
        callbacks=callbacks,
        **fit_options,
    )


def pretrained() -> Model:
    """The pretrained model shipped with fer."""
    raise FerValueError(
        "no pretrained model is bundled with this version of fer yet; "
        "train one with fer.train(df) and pass it as model=..."
    )


def _resolve(model: Model | str | os.PathLike[str] | None) -> Model:
    if model is None:
        return pretrained()
    if isinstance(model, Model):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load(model)
    raise TypeError(f"model must be a fer.Model, a path to a saved model, or None, got {type(model).__name__}")


def predict(x: Any, model: Model | str | os.PathLike[str] | None = None) -> npt.NDArray[np.int64]:
    """Predicted emotion labels (0-6) for images; see :meth:`Model.predict`.
    ``model`` is a Model, a path to a saved one, or None for the pretrained model."""
    return _resolve(model).predict(x)


def predict_proba(
    x: Any, model: Model | str | os.PathLike[str] | None = None
) -> npt.NDArray[np.float32] | pd.DataFrame:
    """Class probabilities (N, 7); a DataFrame for pandas input. See :meth:`Model.predict_proba`."""
    return _resolve(model).predict_proba(x)
