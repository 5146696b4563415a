"""Reading the pickled dataset files users download (CIFAR's python batches) without running code.

``pickle.load`` calls whatever a file names, so a crafted batch file in a data folder could run any
code. :func:`load_plain_pickle` admits only what those files hold: dicts, lists, str, bytes, numbers
(pickle opcodes, no class needed; ``_codecs.encode`` for bytes in Python 3 protocol-2 files) and numpy
arrays and dtypes (the few numpy functions that rebuild them). Anything else is refused, naming the file and what it asked for, before it runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from recipes.train.errors import BadInput

# (module, name) a numpy array or dtype is rebuilt from, for numpy 1.x ("numpy.core") and 2.x ("numpy._core")
NUMPY_GLOBALS = frozenset(
    [(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")]
    + [(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    + [("_codecs", "encode")]  # how a Python 3 protocol-2 pickle spells bytes (a str and a codec name)
)


class PlainUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`NUMPY_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a data file never needs")


def load_plain_pickle(path: str | Path, what: str = "data file") -> Any:
    """Unpickle ``path`` with :class:`PlainUnpickler` (``latin1`` for Python 2 pickles such as CIFAR's)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = PlainUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise BadInput(f"{what} {str(path)!r} was refused without running it: {e}") from None
    except (EOFError, ValueError, TypeError, IndexError, AttributeError) as e:
        raise BadInput(f"{what} {str(path)!r} is truncated or not a pickle ({e})") from None
    obj_dtype = getattr(obj, "dtype", None)
    if obj_dtype is not None and obj_dtype.hasobject:
        raise BadInput(f"{what} {str(path)!r} holds an array of Python objects; expected numbers")
    return obj
