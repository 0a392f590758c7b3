"""`fer.Model`: a CNN for the 7 FER2013 emotions, trained and run in Rust."""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from typing import Any, Iterable

import numpy as np
import numpy.typing as npt
import pandas as pd

from fer import _core, _progress
from fer._inputs import as_images, as_xy
from fer.data import EMOTIONS, NUM_CLASSES, TEST_USAGES, check_frame, split, stratified_holdout
from fer.errors import FerValueError, ModelFileError
from fer.metrics import EvaluationReport, report

FORMAT = "fer-model"
FORMAT_VERSION = 1
HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"]
OPTIMIZERS = ("adam", "adamw", "sgd")
NO_TRAINING_ROWS = "no Training rows to train on (rows with Usage PublicTest/PrivateTest are never trained on)"
DEFAULT_EPOCHS = 10
# The schedule's length while a time-budgeted run times its first epoch.
PROVISIONAL_EPOCHS = 1000


def models() -> dict[str, str]:
    """The named architectures ``fer.train``/``fer.Model`` accept, with a
    one-line description each."""
    return dict(_core.presets())


def _spec_json(model: str | dict, options: dict[str, Any]) -> str:
    if isinstance(model, dict):
        if options:
            raise FerValueError(f"model options {sorted(options)} apply to named presets, not to a spec dict")
        return json.dumps(model)
    if not isinstance(model, str):
        raise TypeError(f"model must be a preset name (see fer.models()) or a spec dict, got {type(model).__name__}")
    return _core.preset_spec(model, json.dumps(options))


def _epochs_in_budget(done: int, elapsed: float, time_limit: float) -> int:
    """The epochs a run of ``time_limit`` seconds holds, ``done`` of them
    taking ``elapsed`` seconds: those plus as many as fit in the time left at
    their mean time (the small slack absorbs float rounding of exact fits)."""
    more = max(0, int((time_limit - elapsed) / (elapsed / done) + 1e-9)) if elapsed > 0 else PROVISIONAL_EPOCHS
    return max(done, min(done + more, PROVISIONAL_EPOCHS))


def _is_number(value: Any, kind: type = float) -> bool:
    """A Python or numpy number (of the kind: whole for ``int``), not a bool."""
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, numbers.Integral if kind is int else numbers.Real)


def _positive(name: str, value: Any, kind: type = float) -> None:
    if not _is_number(value, kind):
        raise TypeError(f"{name} must be a {'number' if kind is float else 'whole number'}, got {value!r}")
    if not value > 0 or (kind is float and not math.isfinite(value)):
        raise FerValueError(f"{name} must be > 0, got {value!r}")


def _rows_by_usage(data: Any, y: Any, usages: set[str]) -> tuple[Any, Any]:
    """A DataFrame with a ``Usage`` column and labels given apart: the rows
    whose Usage is in ``usages`` and their labels (by position), or both
    unchanged where no row is (or not every row is) picked out."""
    if y is None or not isinstance(data, pd.DataFrame) or "Usage" not in data.columns or np.ndim(y) != 1:
        return data, y
    if len(y) != len(data):
        return data, y  # as_xy reports the mismatch
    keep = data["Usage"].astype(str).isin(usages).to_numpy()
    if keep.all() or not keep.any():
        return data, y
    return data[keep], (y.iloc[keep] if isinstance(y, pd.Series) else np.asarray(y)[keep])


def _call(cb: Any, hook: str, *args: Any) -> Any:
    fn = getattr(cb, hook, None)
    return fn(*args) if callable(fn) else None


def _epoch_end(cb: Any, epoch: int, logs: dict[str, float]) -> Any:
    if hasattr(cb, "on_epoch_end"):
        return cb.on_epoch_end(epoch, logs)
    return cb(epoch, logs)


class Model:
    """A convolutional network for 48x48 grayscale faces and the 7 emotions.

    Parameters
    ----------
    model:
        A preset name from :func:`fer.models` (``"seed3x3"``, ``"seed4x4"``,
        ``"fer_vgg"``, ...) or a spec dict as returned by :attr:`spec`.
    seed:
        Seed for the initial weights (and, by default, for training).
    **options:
        Preset options, e.g. ``pooling="same"`` for the study's pooling.

    Inputs to :meth:`predict` and friends: a DataFrame with a ``pixels``
    column, a Series or list of pixel strings, or an array of shape
    (N, 48, 48), (N, 48, 48, 1), (N, 2304) or one (48, 48) image, as uint8
    0-255 or floats in [0, 1].
    """

    def __init__(self, model: str | dict = "seed3x3", *, seed: int = 0, **options: Any) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise FerValueError(f"seed must be a non-negative integer, got {seed!r}")
        self._native = _core.NativeModel(_spec_json(model, options), int(seed))
        self.seed = int(seed)
        self.history = pd.DataFrame({c: pd.Series(dtype="float64") for c in HISTORY_COLUMNS})
        self.metadata: dict[str, Any] = {"preset": model if isinstance(model, str) else None, "options": options}
        self.stop_training = False
        self._learning_rate = 1e-3

    # ----------------------------------------------------------------- info
    @property
    def spec(self) -> dict:
        """The architecture as a JSON-compatible dict (what is saved)."""
        return json.loads(self._native.spec_json)

    @property
    def name(self) -> str:
        return self.spec["name"]

    def count_params(self) -> int:
        return int(sum(row[3] for row in self._native.summary()))

    @property
    def epochs_trained(self) -> int:
        return len(self.history)

    def summary(self, print_fn: Any = print) -> None:
        """Print a Keras-style table: layer, output shape, parameter count."""
        print_fn(self._summary_text())

    def _summary_text(self) -> str:
        rows = self._native.summary()
        width = 65
        lines = [f'Model: "{self.name}"', "_" * width, f" {'Layer (type)':<28}{'Output Shape':<26}{'Param #':>9}", "=" * width]
        for i, (name, kind, shape, params, _trainable) in enumerate(rows):
            shape_text = "(None, " + ", ".join(str(d) for d in shape) + ")"
            lines.append(f" {name + ' (' + kind + ')':<28}{shape_text:<26}{params:>9,}")
            lines.append("_" * width if i + 1 < len(rows) else "=" * width)
        total = sum(r[3] for r in rows)
        trainable = sum(r[4] for r in rows)
        lines += [
            f"Total params: {total:,}",
            f"Trainable params: {trainable:,}",
            f"Non-trainable params: {total - trainable:,}",
            "_" * width,
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._summary_text()

    def __repr__(self) -> str:
        trained = f", trained {self.epochs_trained} epochs" if self.epochs_trained else ", untrained"
        return f"<fer.Model {self.name!r}: {self.count_params():,} params{trained}>\n{self._summary_text()}"

    # ------------------------------------------------------------- training
    @property
    def learning_rate(self) -> float:
        """The base learning rate (settable from callbacks, e.g. ReduceLROnPlateau);
        a schedule scales it per batch, and the history records the rate used.
        A loaded model reports the last rate its history recorded (near 0 after
        a cosine schedule); ``fit`` sets it from its ``learning_rate``."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        _positive("learning_rate", value)
        self._learning_rate = float(value)
        self._native.set_learning_rate(float(value))

    def get_weights(self) -> bytes:
        """The weights as safetensors bytes (for snapshots; see :meth:`set_weights`)."""
        return self._native.get_weights()

    def set_weights(self, weights: bytes) -> None:
        """Restore weights taken with :meth:`get_weights`."""
        self._native.set_weights(weights)

    def fit(
        self,
        data: Any,
        y: Any = None,
        *,
        epochs: int | None = None,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        optimizer: str = "adam",
        validation: float = 0.1,
        validation_data: Any = None,
        seed: int | None = None,
        progress: bool = True,
        callbacks: Iterable[Any] | None = None,
        label_smoothing: float = 0.0,
        class_weight: str | dict[int, float] | Iterable[float] | None = None,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        nesterov: bool = True,
        time_limit: float | None = None,
        augment: bool | dict[str, Any] | None = None,
        lr_schedule: str = "constant",
        warmup_epochs: float = 0.0,
        initial_epoch: int = 0,
    ) -> "Model":
        """Train (or continue training) on FER data; returns ``self``.

        Parameters
        ----------
        data:
            A FER DataFrame (``emotion``, ``pixels``, optional ``Usage``: only
            ``Training`` rows train, ``PublicTest``/``PrivateTest`` rows are
            never used), or images with labels in ``y``, or an ``(x, y)`` pair.
            ``y`` goes with the rows by position, not by index label.
        epochs:
            Number of epochs (> 0). ``None`` (the default): 10, or with
            ``time_limit`` as many as fit in it.
        batch_size, learning_rate:
            As in Keras; both must be > 0.
        optimizer:
            ``"adam"`` (Keras defaults: beta 0.9/0.999, eps 1e-7), ``"adamw"``
            (decoupled ``weight_decay``) or ``"sgd"`` (``momentum``,
            ``nesterov``, L2 ``weight_decay``).
        validation:
            Fraction of the training rows held out (stratified by emotion) to
            report ``val_loss``/``val_accuracy`` each epoch; 0 for none.
        validation_data:
            Explicit validation data instead (same forms as ``data``).
        seed:
            Seed for shuffling, dropout and the validation draw (default: the
            model's seed). Same seed and thread count give identical weights.
        progress:
            Show a progress bar (tqdm.auto: works in Jupyter and terminals).
        callbacks:
            Functions ``f(epoch, logs)`` returning True to stop, or
            :class:`fer.callbacks.Callback` objects (EarlyStopping, ...).
        label_smoothing:
            In [0, 1): mixes the one-hot targets with the uniform distribution.
        class_weight:
            ``"balanced"`` (as scikit-learn: ``n_rows / (n_classes * count)``
            per emotion, from the training labels), ``"sqrt"`` (the square
            root of those: gentler, and what trained the pretrained model),
            a dict ``{label: weight}`` or 7 weights.
        time_limit:
            A budget in seconds. With ``epochs=None`` the run is sized to it:
            after each epoch, the epochs still to come are those that fit in
            the time left at the mean epoch time so far, and the learning-rate
            schedule is laid out over that total, so a cosine decay still ends
            at the last epoch (how many epochs that is depends on the
            machine's speed; pass ``epochs`` for runs that repeat exactly).
            The first epoch runs before the length is known: in the warm-up
            with ``warmup_epochs`` >= 1 (``fer.train``'s default), else near
            the peak rate; at most 1000 epochs. With ``epochs`` given,
            training stops after the epoch in which the limit passed.
        augment:
            Random, seeded data augmentation of each training batch (in Rust):
            ``True`` for the defaults, or a dict overriding any of ``flip``
            (True), ``shift`` (4 px), ``rotation`` (10 degrees), ``scale``
            (0.1), ``brightness`` (0.1), ``contrast`` (0.2), ``erasing``
            (probability of random erasing, 0: off; 0.25 suits long runs).
            ``None``/``False``: off.
        lr_schedule:
            ``"constant"``, ``"cosine"`` (linear warm-up over
            ``warmup_epochs``, then cosine decay to 0 at the last epoch) or
            ``"one_cycle"``; evaluated every batch.
        warmup_epochs:
            Length of the cosine schedule's linear warm-up, in epochs.
        initial_epoch:
            As in Keras, for resuming: train epochs ``initial_epoch`` to
            ``epochs - 1``, with the learning-rate schedule picking up where
            an uninterrupted run of ``epochs`` epochs would be. (The
            optimizer's moments start afresh.)

        Ctrl-C stops training within a batch and raises KeyboardInterrupt; the
        model keeps the weights of the last completed epoch.
        """
        seed = self.seed if seed is None else seed
        if not _is_number(seed, int) or seed < 0:
            raise FerValueError(f"seed must be a non-negative integer, got {seed!r}")
        if not _is_number(label_smoothing) or not 0 <= label_smoothing < 1:
            raise FerValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if not (callable(cb) or hasattr(cb, "on_epoch_end")):
                raise TypeError(f"a callback must be a function f(epoch, logs) or a fer.callbacks.Callback, got {cb!r}")
        # The time budget that sizes the run (None: the run has `epochs`).
        budget = time_limit if epochs is None else None
        if budget is not None:
            if lr_schedule in ("one_cycle", "onecycle"):
                raise FerValueError(
                    "lr_schedule='one_cycle' needs a fixed epoch count (its rise is a fraction of the run): "
                    "pass epochs=, or use lr_schedule='cosine' to size the run to time_limit"
                )
            if initial_epoch:
                raise FerValueError(f"initial_epoch={initial_epoch!r} resumes a run of fixed length: pass epochs= too")
        epochs = DEFAULT_EPOCHS if epochs is None else epochs
        _positive("epochs", epochs, int)
        _positive("batch_size", batch_size, int)
        _positive("learning_rate", learning_rate)
        if optimizer not in OPTIMIZERS:
            raise FerValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if weight_decay < 0 or not 0 <= momentum < 1:
            raise FerValueError(f"need weight_decay >= 0 and 0 <= momentum < 1, got {weight_decay!r}, {momentum!r}")
        if time_limit is not None:
            _positive("time_limit", time_limit)
        if not _is_number(initial_epoch, int) or not 0 <= initial_epoch < epochs:
            raise FerValueError(f"initial_epoch must be a whole number in [0, epochs={epochs}), got {initial_epoch!r}")

        augment_json = _augment_json(augment)
        x, labels, xv, yv = self._training_data(data, y, validation, validation_data, seed)
        weights = _class_weights(class_weight, labels)
        self._check_training_memory(int(batch_size), len(labels))
        self._native.begin_fit(
            x,
            labels,
            batch_size=int(batch_size),
            optimizer=optimizer,
            learning_rate=float(learning_rate),
            weight_decay=float(weight_decay),
            momentum=float(momentum),
            nesterov=bool(nesterov),
            label_smoothing=float(label_smoothing),
            class_weights=weights,
            seed=int(seed),
            augment=augment_json,
            lr_schedule=lr_schedule,
            epochs=PROVISIONAL_EPOCHS if budget is not None else int(epochs),
            warmup_epochs=float(warmup_epochs),
            initial_epoch=int(initial_epoch),
        )
        self._learning_rate = float(learning_rate)
        self.stop_training = False
        last_good = self.get_weights()
        # Whatever ends the fit (a callback raising included), the native
        # trainer and its buffers are released.
        try:
            for cb in callbacks:
                _call(cb, "on_train_begin", self)
            start = time.perf_counter()
            # Until the first epoch of a budgeted run is timed, a long
            # provisional schedule keeps the rate in its warm-up (or near
            # its peak).
            planned, done = PROVISIONAL_EPOCHS if budget is not None else int(epochs), int(initial_epoch)
            while done < planned:
                logs = self._run_epoch(xv, yv, progress)
                done += 1
                last_good = self.get_weights()
                records = self.history.to_dict("records") + [logs]
                self.history = pd.DataFrame(records, columns=HISTORY_COLUMNS).astype("float64")
                for cb in callbacks:
                    stop = _epoch_end(cb, int(logs["epoch"]), dict(logs))
                    if stop is not None and bool(stop):
                        self.stop_training = True
                elapsed = time.perf_counter() - start
                if budget is not None:
                    fits = _epochs_in_budget(done, elapsed, budget)
                    if fits != planned:
                        planned = fits
                        self._native.set_epochs(planned)
                elif time_limit is not None and elapsed >= time_limit:
                    break
                if self.stop_training:
                    break
            for cb in callbacks:
                _call(cb, "on_train_end", self)
        except KeyboardInterrupt:
            self.set_weights(last_good)
            raise
        finally:
            self._native.end_fit()
        self.metadata["trained_on"] = {"images": int(len(labels)), "validation_images": int(len(yv)) if yv is not None else 0}
        return self

    def _check_training_memory(self, batch_size: int, rows: int) -> None:
        """Refuses a batch whose activations cannot fit in this machine's
        memory, which would otherwise end the process in an out-of-memory kill."""
        total = _physical_memory()
        per_image = sum(math.prod(shape) for _, _, shape, _, _ in self._native.summary())
        # A lower bound: the backward needs every layer's output kept from
        # the forward, and as much again for the gradients.
        need = 2 * 4 * per_image * min(batch_size, rows)
        if total is not None and need > total:
            raise FerValueError(
                f"batch_size={batch_size} needs at least {need / 2**30:.1f} GiB for the activations of "
                f"{self.name!r} in training, more than this machine's {total / 2**30:.1f} GiB of memory: "
                "use a smaller batch_size (the default is 64)"
            )

    def _training_data(
        self, data: Any, y: Any, validation: float, validation_data: Any, seed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        if not _is_number(validation) or not 0 <= validation < 1:
            raise FerValueError(f"validation must be a fraction in [0, 1), got {validation!r}")
        if validation_data is not None:
            validation = 0.0
        if y is None and isinstance(data, pd.DataFrame):
            check_frame(data)
            parts = split(data, validation=validation, seed=seed)
            if len(parts.train) == 0 and len(parts.validation):
                raise FerValueError(
                    f"validation={validation!r} holds out all {len(parts.validation)} Training rows; "
                    "lower it or pass more rows"
                )
            if len(parts.train) == 0:
                raise FerValueError(NO_TRAINING_ROWS)
            x, labels = as_xy(parts.train)
            xv, yv = as_xy(parts.validation) if len(parts.validation) else (None, None)
        else:
            if isinstance(data, pd.DataFrame) and "Usage" in data.columns and y is not None:
                data, y = _rows_by_usage(data, y, {"Training"})
                if not (data["Usage"].astype(str) == "Training").any():
                    raise FerValueError(NO_TRAINING_ROWS)
            x, labels = as_xy(data, y)
            held = stratified_holdout(labels, validation, seed)
            xv, yv = (x[held], labels[held]) if held.any() else (None, None)
            x, labels = (x[~held], labels[~held]) if held.any() else (x, labels)
        if validation_data is not None:
            xv, yv = as_xy(validation_data)
        return np.ascontiguousarray(x), labels, xv, yv

    def _run_epoch(self, xv: np.ndarray | None, yv: np.ndarray | None, progress: bool) -> dict[str, float]:
        epoch = self.epochs_trained + 1
        t0 = time.perf_counter()
        batches = self._native.start_epoch()
        loss_sum, correct, seen = 0.0, 0, 0
        with _progress.bar(batches, f"epoch {epoch}", progress) as bar:
            for _ in range(batches):
                batch_loss, batch_correct, count = self._native.train_batch()
                loss_sum += batch_loss
                correct += batch_correct
                seen += count
                bar.update(1)
                bar.set_postfix_str(f"loss {loss_sum / seen:.4f} acc {correct / seen:.4f}", refresh=False)
            logs = {
                "epoch": float(epoch),
                "loss": loss_sum / max(seen, 1),
                "accuracy": correct / max(seen, 1),
                "val_loss": math.nan,
                "val_accuracy": math.nan,
                "learning_rate": self._native.current_learning_rate,
            }
            if xv is not None and yv is not None and len(yv):
                logs["val_loss"], logs["val_accuracy"] = self._native.evaluate(xv, yv, 256)
                bar.set_postfix_str(
                    f"loss {logs['loss']:.4f} acc {logs['accuracy']:.4f} "
                    f"val_loss {logs['val_loss']:.4f} val_acc {logs['val_accuracy']:.4f}"
                )
        logs["seconds"] = time.perf_counter() - t0
        return logs

    # ----------------------------------------------------------- inference
    def predict_proba(
        self, x: Any, *, batch_size: int = 256, tta: str | None = None
    ) -> npt.NDArray[np.float32] | pd.DataFrame:
        """Class probabilities, shape (N, 7). For pandas input, a DataFrame
        with the emotion names as columns and the input's index.

        ``tta`` (test-time augmentation) averages the probabilities over
        views of each image: ``"flip"`` (the image and its mirror, 2x the
        work) or ``"crops"`` (plus 2-pixel shifts, 10x); off by default."""
        _positive("batch_size", batch_size, int)
        images, index = as_images(x)
        proba = self._native.predict_proba(images, int(batch_size), tta)
        if index is not None:
            return pd.DataFrame(proba, index=index, columns=list(EMOTIONS))
        return proba

    def predict(self, x: Any, *, batch_size: int = 256, tta: str | None = None) -> npt.NDArray[np.int64]:
        """Predicted labels 0-6 (``fer.EMOTIONS[label]`` names them); ``tta``
        as in :meth:`predict_proba`."""
        proba = self.predict_proba(x, batch_size=batch_size, tta=tta)
        values = proba.to_numpy() if isinstance(proba, pd.DataFrame) else proba
        return values.argmax(axis=1).astype(np.int64)

    def evaluate(self, data: Any, y: Any = None, *, batch_size: int = 256, tta: str | None = None) -> EvaluationReport:
        """Accuracy, loss, per-class precision/recall/F1/support and the
        confusion matrix on labelled data. A FER DataFrame with a ``Usage``
        column is evaluated on its test rows (PublicTest/PrivateTest) when it
        has any; pass ``df[df.Usage == "Training"]`` to score training rows.
        ``tta`` as in :meth:`predict_proba`."""
        _positive("batch_size", batch_size, int)
        if y is None and isinstance(data, pd.DataFrame) and "Usage" in data.columns:
            test = split(data, validation=0.0).test
            if len(test):
                data = test
        else:
            data, y = _rows_by_usage(data, y, set(TEST_USAGES))
        x, labels = as_xy(data, y)
        proba = self._native.predict_proba(x, int(batch_size), tta)
        picked = proba[np.arange(len(labels)), labels].astype(np.float64)
        loss = float(-np.log(np.clip(picked, 1e-12, None)).mean())
        return report(labels, proba.argmax(axis=1), loss)

    # --------------------------------------------------------- persistence
    def _metadata_json(self) -> str:
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "fer_version": _core.__version__,
            "seed": self.seed,
            "metadata": self.metadata,
            "history": json.loads(self.history.to_json(orient="records")),
        }
        return json.dumps(meta)

    def to_bytes(self) -> bytes:
        """The model as bytes: a safetensors file whose header carries the JSON
        spec and training metadata (what :meth:`save` writes)."""
        return self._native.to_bytes(self._metadata_json())

    @classmethod
    def from_bytes(cls, data: bytes) -> "Model":
        """Rebuild a model from :meth:`to_bytes` output."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected bytes, got {type(data).__name__}")
        native, meta_json = _core.NativeModel.from_bytes(bytes(data))
        try:
            meta = json.loads(meta_json)
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"the model's metadata is not valid JSON ({exc})") from None
        if meta.get("format") != FORMAT:
            raise ModelFileError("not a fer model: the safetensors header has no fer metadata")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ModelFileError(
                f"model file format {meta['format_version']} is newer than this fer supports ({FORMAT_VERSION}); upgrade fer"
            )
        model = cls.__new__(cls)
        model._native = native
        model.seed = int(meta.get("seed", 0))
        model.metadata = meta.get("metadata", {})
        history = pd.DataFrame(meta.get("history", []))
        model.history = history.reindex(columns=HISTORY_COLUMNS).astype("float64")
        model.stop_training = False
        model._learning_rate = float(history["learning_rate"].iloc[-1]) if len(history) else 1e-3
        return model

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to ``path`` (safetensors weights with the JSON spec
        and training metadata in its header; conventionally ``*.fer``)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            raise IsADirectoryError(f"cannot save the model to {path!r}: it is a directory (give a file name, e.g. model.fer)")
        data = self.to_bytes()
        tmp = f"{path}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def __reduce__(self) -> tuple:
        return (Model.from_bytes, (self.to_bytes(),))

    def plot_history(self, metrics: Iterable[str] = ("loss", "accuracy")) -> Any:
        """Learning curves of :attr:`history` (see :func:`fer.plots.plot_history`); returns the matplotlib Figure."""
        from fer.plots import plot_history

        return plot_history(self, metrics=metrics)


def load(path: str | os.PathLike[str]) -> Model:
    """Load a model written by :meth:`Model.save`. A truncated, corrupted or
    foreign file raises :class:`fer.ModelFileError`."""
    with open(path, "rb") as f:
        data = f.read()
    return Model.from_bytes(data)


def _augment_json(augment: bool | dict[str, Any] | None) -> str | None:
    if augment is None or augment is False:
        return None
    if augment is True:
        return "{}"
    if isinstance(augment, dict):
        return json.dumps(augment)
    raise TypeError(f"augment must be True, False, None or a dict of settings, got {augment!r}")


def _physical_memory() -> int | None:
    """Bytes of RAM, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def _class_weights(class_weight: Any, labels: np.ndarray) -> list[float] | None:
    if class_weight is None:
        return None
    if isinstance(class_weight, str):
        if class_weight not in ("balanced", "sqrt"):
            raise FerValueError(f"class_weight must be 'balanced', 'sqrt', a dict or 7 numbers, got {class_weight!r}")
        counts = np.bincount(labels, minlength=NUM_CLASSES).astype(float)
        present = counts > 0
        weights = np.ones(NUM_CLASSES)
        weights[present] = len(labels) / (present.sum() * counts[present])
        # Full balancing weights Disgust (1.5% of FER2013's Training rows)
        # about 9x and costs overall accuracy; the square root (about 3x)
        # lifts its recall for less.
        return (np.sqrt(weights) if class_weight == "sqrt" else weights).tolist()
    if isinstance(class_weight, dict):
        bad = [k for k in class_weight if k not in range(NUM_CLASSES)]
        if bad:
            raise FerValueError(f"class_weight keys must be labels 0-6, got {bad}")
        weights = [float(class_weight.get(k, 1.0)) for k in range(NUM_CLASSES)]
    else:
        weights = [float(w) for w in class_weight]
        if len(weights) != NUM_CLASSES:
            raise FerValueError(f"class_weight needs 7 weights, got {len(weights)}")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) == 0:
        raise FerValueError(f"class weights must be finite, >= 0 and not all 0, got {weights}")
    return weights
