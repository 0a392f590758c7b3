"""Training callbacks, Keras style.

A callback is either a plain function ``f(epoch, logs)`` (return ``True`` to
stop training) or an object with any of ``on_train_begin(model)``,
``on_epoch_end(epoch, logs)`` and ``on_train_end(model)``; setting
``model.stop_training = True`` also stops after the current epoch. ``epoch``
counts from 1 (the history's ``epoch`` column; Keras counts from 0) and goes
on across fits of the same model. ``logs`` holds the history row of the
epoch: ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` (NaN without
validation rows), ``learning_rate`` and ``seconds``. ``loss`` includes the
label smoothing and class weights of the fit, ``val_loss`` the label
smoothing, so with ``fer.train``'s smoothing both run higher than
:meth:`fer.Model.evaluate`'s plain cross-entropy.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from fer.errors import FerValueError

if TYPE_CHECKING:
    from fer.model import Model

__all__ = ["Callback", "EarlyStopping", "ReduceLROnPlateau"]


class Callback:
    """Base class; override the hooks you need."""

    model: "Model"

    def on_train_begin(self, model: "Model") -> None:
        self.model = model

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> bool | None:
        return None

    def on_train_end(self, model: "Model") -> None:
        return None


class _Monitoring(Callback):
    """A callback that watches one value of the logs, epoch by epoch."""

    monitor: str

    def on_train_begin(self, model: "Model") -> None:
        super().on_train_begin(model)
        self._epochs_seen = 0

    def _monitored(self, logs: dict[str, float]) -> float:
        """The value ``monitor`` names. A name training does not report, or
        a validation metric that is NaN at the first epoch of the fit (one
        without validation data), is an error: otherwise the callback would
        act on "no improvement" every epoch."""
        name = type(self).__name__
        if self.monitor not in logs:
            raise FerValueError(
                f"{name} monitors {self.monitor!r}, which training does not report; "
                f"available: {sorted(logs)} (val_* needs validation > 0 or validation_data)"
            )
        value = float(logs[self.monitor])
        first, self._epochs_seen = self._epochs_seen == 0, self._epochs_seen + 1
        if first and math.isnan(value):
            raise FerValueError(
                f"{name} monitors {self.monitor!r}, which is NaN after the first epoch: "
                + ("this fit has no validation rows (pass validation > 0 or validation_data, or monitor 'loss')"
                   if self.monitor.startswith("val_") else "training diverged")
            )
        return value


def _improved(mode: str, value: float, best: float, min_delta: float) -> bool:
    if math.isnan(value):
        return False
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _mode_for(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise FerValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "accuracy" in monitor else "min"
    return mode


class EarlyStopping(_Monitoring):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; with
    ``restore_best_weights`` the model ends with the best epoch's weights."""

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = True,
    ) -> None:
        if patience < 0:
            raise FerValueError(f"patience must be >= 0, got {patience}")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = abs(min_delta)
        self.mode = _mode_for(monitor, mode)
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, model: "Model") -> None:
        super().on_train_begin(model)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.best_weights: bytes | None = None
        self.wait = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> bool | None:
        value = self._monitored(logs)
        if _improved(self.mode, value, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return None
        self.wait += 1
        return self.wait > self.patience

    def on_train_end(self, model: "Model") -> None:
        if self.restore_best_weights and self.best_weights is not None:
            model.set_weights(self.best_weights)


class ReduceLROnPlateau(_Monitoring):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not
    improved for ``patience`` epochs (not below ``min_lr``)."""

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.5,
        patience: int = 3,
        min_delta: float = 1e-4,
        mode: str = "auto",
        min_lr: float = 1e-6,
    ) -> None:
        if not 0 < factor < 1:
            raise FerValueError(f"factor must be in (0, 1), got {factor}")
        if patience < 0:
            raise FerValueError(f"patience must be >= 0, got {patience}")
        self.monitor, self.factor, self.patience = monitor, factor, patience
        self.min_delta, self.min_lr = abs(min_delta), min_lr
        self.mode = _mode_for(monitor, mode)

    def on_train_begin(self, model: "Model") -> None:
        super().on_train_begin(model)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> bool | None:
        value = self._monitored(logs)
        if _improved(self.mode, value, self.best, self.min_delta):
            self.best, self.wait = value, 0
            return None
        self.wait += 1
        if self.wait > self.patience:
            lr = self.model.learning_rate
            self.model.learning_rate = max(self.min_lr, lr * self.factor)
            self.wait = 0
        return None


CallbackLike = Callable[[int, dict], Any] | Callback | Any
