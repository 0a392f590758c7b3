# Type stub for the native module `fer._core` (written by hand; keep in step
# with src/python.rs).
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
