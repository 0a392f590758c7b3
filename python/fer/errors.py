"""Exceptions raised by fer.

All of them subclass a built-in exception, so ``except ValueError`` keeps
working in existing pipelines:

* :class:`FerValueError` (a ``ValueError``): bad data or arguments.
* :class:`ModelFileError` (a ``ValueError``): a model file that is truncated,
  corrupted, or not a fer model.
* :class:`FerInternalError` (a ``RuntimeError``): a bug in fer's native code.
"""

from fer._core import FerInternalError, FerValueError, ModelFileError

__all__ = ["FerValueError", "ModelFileError", "FerInternalError"]
