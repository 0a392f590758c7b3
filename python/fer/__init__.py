"""fer: facial-emotion recognition for the Python data stack.

Train and run convolutional networks on FER2013-style data (48x48 grayscale
faces, 7 emotions) from pandas; the numerics run in native Rust.

>>> import pandas as pd, fer
>>> df = fer.load_sample()            # or pd.read_csv("fer2013.csv.gz")
>>> x = fer.parse_pixels(df.pixels)   # (N, 48, 48) uint8
"""

from fer._core import __version__
from fer.data import EMOTIONS, Split, load_sample, parse_pixels, split
from fer.errors import FerInternalError, FerValueError, ModelFileError

__all__ = [
    "__version__",
    "EMOTIONS",
    "FerInternalError",
    "FerValueError",
    "ModelFileError",
    "Split",
    "load_sample",
    "parse_pixels",
    "split",
]
