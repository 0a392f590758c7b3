"""fer: facial-emotion recognition for the Python data stack.

Train and run convolutional networks on FER2013-style data (48x48 grayscale
faces, 7 emotions) from pandas; the numerics run in native Rust.

>>> import fer
>>> df = fer.load_sample()                       # or pd.read_csv("fer2013.csv.gz")
>>> model = fer.train(df, epochs=1, progress=False)
>>> labels = model.predict(df)                   # ints 0-6; fer.EMOTIONS names them
"""

from fer import callbacks
from fer._core import __version__
from fer._core import get_num_threads as _get_num_threads
from fer._core import set_num_threads as _set_num_threads
from fer.data import EMOTIONS, Split, load_sample, parse_pixels, split
from fer.errors import FerInternalError, FerValueError, ModelFileError
from fer.metrics import EvaluationReport
from fer.model import Model, load, models
from fer.api import predict, predict_proba, pretrained, train

__all__ = [
    "__version__",
    "EMOTIONS",
    "EvaluationReport",
    "FerInternalError",
    "FerValueError",
    "Model",
    "ModelFileError",
    "Split",
    "callbacks",
    "get_num_threads",
    "load",
    "load_sample",
    "models",
    "parse_pixels",
    "predict",
    "predict_proba",
    "pretrained",
    "set_num_threads",
    "split",
    "train",
]


def set_num_threads(n: int) -> None:
    """Set how many threads fer's native code uses (0: all cores, or
    ``RAYON_NUM_THREADS`` when set). Takes effect at the next call."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise FerValueError(f"n must be a whole number >= 0, got {n!r}")
    _set_num_threads(n)


def get_num_threads() -> int:
    """How many threads fer's native code uses."""
    return _get_num_threads()


from fer.plots import plot_confusion_matrix, show_faces  # noqa: E402  (matplotlib is imported lazily)

__all__ += ["plot_confusion_matrix", "show_faces"]
