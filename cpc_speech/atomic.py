"""Atomic file writes: a unique temporary file beside the target, renamed over it when complete.

A crash, a full disk (ENOSPC), a read-only folder (EROFS) or a permission error never leaves a
half-written file under the final name, and the temporary file is removed on every error (only a
SIGKILL mid-write can leave one: its name starts with ``.`` and contains ``.tmp``, see
:func:`remove_stale_temporaries`). File-system errors are re-raised as ``OSError`` naming the final
path, so the command line prints ``cpc-speech CMD: error: PATH: No space left on device``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

PathLike = Union[str, Path]


def _named(exc: OSError, path: Path) -> OSError:
    """The same error (errno kept) with ``path`` as its file name."""
    if exc.errno is None:
        return OSError(f"{path}: {exc}")
    out = type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))
    return out


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", fsync: bool = False, encoding: str = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing (``"w"`` text or ``"wb"`` binary); when the
    block ends without error it is (optionally fsynced and) renamed over ``path``; otherwise removed."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(21, "is a folder, not a file", str(path))
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _named(exc, path) from None
    tmp = Path(name)
    ok = False
    try:
        try:
            f = os.fdopen(fd, mode, encoding=None if "b" in mode else encoding, newline=None if "b" in mode else "")
        except BaseException:
            os.close(fd)
            raise
        try:
            with f:
                yield f
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
            ok = True
        except OSError as exc:
            raise _named(exc, path) from None
    finally:
        if not ok:
            with contextlib.suppress(OSError):
                tmp.unlink()


def atomic_write_text(path: PathLike, text: str) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_bytes(path: PathLike, data: bytes, fsync: bool = False) -> Path:
    with atomic_open(path, "wb", fsync=fsync) as f:
        f.write(data)
    return Path(path)


def is_temporary(path: PathLike) -> bool:
    """Whether ``path`` is a temporary file of :func:`atomic_open` (or of older cpc_speech versions)."""
    name = Path(path).name
    return name.startswith(".") and (name.endswith(".tmp") or ".tmp-" in name)


def remove_stale_temporaries(folder: PathLike) -> int:
    """Delete the temporary files a killed writer left in ``folder`` (call only while holding the
    folder's lock, see :mod:`cpc_speech.runlock`); returns how many were removed."""
    folder = Path(folder)
    removed = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_file() and is_temporary(p):
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed += 1
    return removed
