# Type stub for the native module `fer._core` (written by hand; keep in step
# with src/python.rs). Users call the wrappers in `fer`, not these.
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

__version__: str
EMOTIONS: list[str]

class FerValueError(ValueError): ...
class ModelFileError(ValueError): ...
class FerInternalError(RuntimeError): ...

def parse_pixels(rows: Sequence[Any], index: Sequence[Any] | None = None) -> npt.NDArray[np.uint8]:
    """Parses pixel strings into a (N, 48, 48) uint8 array (in parallel)."""

def presets() -> list[tuple[str, str]]:
    """(name, description) of each model preset."""

def preset_spec(name: str, options_json: str) -> str:
    """The JSON spec of preset `name` with options given as a JSON object."""

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...

class NativeModel:
    """The native half of fer.Model: a network, and its trainer while fitting."""

    def __init__(self, spec_json: str, seed: int) -> None: ...
    @staticmethod
    def from_bytes(data: bytes) -> tuple[NativeModel, str]:
        """(model, metadata_json) from a model file's bytes."""
    def to_bytes(self, metadata_json: str) -> bytes: ...
    def get_weights(self) -> bytes: ...
    def set_weights(self, data: bytes) -> None: ...
    @property
    def spec_json(self) -> str: ...
    def summary(self) -> list[tuple[str, str, list[int], int, int]]:
        """(name, kind, output_shape, params, trainable_params) per layer."""
    def predict_proba(
        self, x: npt.NDArray[np.float32], batch_size: int, tta: str | None = None
    ) -> npt.NDArray[np.float32]: ...
    def begin_fit(
        self,
        x: npt.NDArray[np.float32],
        y: npt.NDArray[np.uint8],
        *,
        batch_size: int,
        optimizer: str,
        learning_rate: float,
        weight_decay: float,
        momentum: float,
        nesterov: bool,
        label_smoothing: float,
        class_weights: list[float] | None,
        seed: int,
        augment: str | None = None,
        lr_schedule: str = "constant",
        epochs: int = 1,
        warmup_epochs: float = 0.0,
        initial_epoch: int = 0,
    ) -> None: ...
    @property
    def current_learning_rate(self) -> float: ...
    def set_epochs(self, epochs: int) -> None:
        """Lays the learning-rate schedule out over ``epochs`` epochs in all."""
    def start_epoch(self) -> int: ...
    def train_batch(self) -> tuple[float, int, int]: ...
    def set_learning_rate(self, lr: float) -> None: ...
    def evaluate(self, x: npt.NDArray[np.float32], y: npt.NDArray[np.uint8], batch_size: int) -> tuple[float, float]: ...
    def end_fit(self) -> None: ...
