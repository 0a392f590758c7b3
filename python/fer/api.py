"""The one-call functions: ``fer.train``, ``fer.predict``, ``fer.predict_proba``."""

from __future__ import annotations

import functools
import importlib.resources
import os
from typing import Any, Iterable

import numpy as np
import numpy.typing as npt
import pandas as pd

from fer.errors import FerValueError
from fer.model import Model, load


DEFAULT_MODEL = "fer_vgg"
PRETRAINED_FILE = "pretrained.fer"


def train(
    data: Any,
    model: str | dict | Model = DEFAULT_MODEL,
    *,
    epochs: int | None = None,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    optimizer: str = "adam",
    validation: float = 0.1,
    seed: int = 0,
    progress: bool = True,
    callbacks: Iterable[Any] | None = None,
    augment: bool | dict[str, Any] | None = True,
    lr_schedule: str = "cosine",
    warmup_epochs: float = 1.0,
    label_smoothing: float = 0.1,
    class_weight: Any = "sqrt",
    time_limit: float | None = None,
    **model_options: Any,
) -> Model:
    """Build a model and train it with fer's recipe; returns the trained :class:`fer.Model`.

    ``data`` is a FER DataFrame (``emotion``, ``pixels``, optional ``Usage``;
    only Training rows train, and ``validation`` of them, stratified, are
    held out to report ``val_accuracy``) or an ``(x, y)`` pair.

    ``model`` names a preset (:func:`fer.models`) or is a :class:`Model` to
    train further (a checkpoint, say); the default, ``"fer_vgg"``,
    is the VGG-style network with BatchNorm that the shipped pretrained model
    uses. ``model_options`` go to the preset (e.g. ``pooling="same"`` for the
    study's ``"seed3x3"``), except the other keywords of :meth:`Model.fit`
    (``weight_decay``, ``momentum``, ``nesterov``, ``validation_data``,
    ``initial_epoch``), which go to ``fit``.

    Unlike :meth:`Model.fit`, whose defaults train plainly (as Keras' ``fit``
    does), ``train`` defaults to fer's recipe: random augmentation (flips,
    shifts, small rotations and zooms, brightness/contrast jitter;
    ``augment=False`` turns it off), a cosine learning-rate schedule with a
    one-epoch warm-up, label smoothing 0.1, and ``class_weight="sqrt"``
    (rare emotions such as Disgust weigh more; ``None`` turns it off). Pass
    ``augment=False, lr_schedule="constant", label_smoothing=0,
    class_weight=None`` to train the study's way. These defaults gave the best
    60-minute result (``benchmarks/bench_recipe.py``); the shipped pretrained
    model trained for 176 epochs with more regularisation (``dropout=0.25``
    and ``augment={"erasing": 0.25}``, see ``scripts/train_pretrained.py``).

    ``epochs`` defaults to 10. Give ``time_limit`` (seconds) instead and the
    run is sized to it: ``fer.train(df, time_limit=3600)`` trains as many
    epochs as fit in an hour at the speed measured as it goes, with the
    cosine schedule laid out over them (see :meth:`Model.fit`). With both,
    training stops after ``epochs`` or after the epoch in which the limit
    passed, whichever comes first.
    """
    if not isinstance(model, (str, dict, Model)) and hasattr(model, "__len__"):
        raise TypeError(
            f"fer.train's second argument is the model, got {type(model).__name__}; "
            "for images and labels apart, pass them as one pair: fer.train((x, y))"
        )
    fit_keys = {"weight_decay", "momentum", "nesterov", "validation_data", "initial_epoch"}
    fit_options = {k: model_options.pop(k) for k in list(model_options) if k in fit_keys}
    if isinstance(model, Model):
        if model_options:
            raise FerValueError(f"model options {sorted(model_options)} apply to named presets, not to an existing Model")
        net = model
    else:
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
        augment=augment,
        lr_schedule=lr_schedule,
        warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing,
        class_weight=class_weight,
        time_limit=time_limit,
        **fit_options,
    )


@functools.lru_cache(maxsize=1)
def _pretrained_bytes() -> bytes:
    resource = importlib.resources.files("fer") / "data" / PRETRAINED_FILE
    try:
        return resource.read_bytes()
    except FileNotFoundError:
        raise FerValueError(
            f"the pretrained model file fer/data/{PRETRAINED_FILE} is missing from this installation; "
            "reinstall fer, or train one with fer.train(df) and pass it as model=..."
        ) from None


def pretrained() -> Model:
    """The model shipped with fer: ``fer_vgg`` trained with :func:`fer.train`
    on the Training rows of FER2013 (``scripts/train_pretrained.py``; its log
    is ``scripts/pretrained_log.txt``). Each call returns a fresh copy."""
    return Model.from_bytes(_pretrained_bytes())


@functools.lru_cache(maxsize=1)
def _shared_pretrained() -> Model:
    # fer.predict(x) in a pipeline should not re-read 5 MB per call; prediction
    # leaves the model unchanged, so one shared copy serves every call.
    return pretrained()


def _resolve(model: Model | str | os.PathLike[str] | None) -> Model:
    if model is None:
        return _shared_pretrained()
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
