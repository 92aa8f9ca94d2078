"""Type aliases used across the package, and the default warning callback.

* ``PathLike``: a file or folder given as ``str`` or :class:`pathlib.Path`;
* ``Warn``: an optional ``on_warning(message)`` callback that loaders and extractors call for a
  recoverable problem (a skipped file, a short clip); :func:`warner` turns ``None`` into Python's
  :func:`warnings.warn`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Optional, Union

PathLike = Union[str, Path]
Warn = Optional[Callable[[str], None]]


def warner(on_warning: Warn) -> Callable[[str], None]:
    """``on_warning`` itself, or a function that issues a :class:`UserWarning` at the caller's caller."""
    return on_warning if on_warning is not None else (lambda msg: warnings.warn(msg, stacklevel=3))
