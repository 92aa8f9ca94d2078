"""One owner per run or output folder: an OS-level lock file recording who holds it.

Every command that writes a run folder (``pretrain``, ``finetune --output-dir``, ``extract``,
``report``, ``synth``...) or an output file (``probe --out``, ``prepare --out``) holds a lock for as
long as it writes::

    with hold_output("exp/run", "pretrain"):   # a folder: exp/run/.cpc-speech.lock
        ...
    with hold_output("results/probe.json", "probe", kind="file"):   # results/.probe.json.lock
        ...

The lock is an exclusive POSIX lock (``fcntl.lockf``) on the lock file, so the kernel releases it
when its process exits, however it exits (a SIGKILLed owner leaves a stale file that the next
writer simply takes over). POSIX locks, unlike ``flock``, are not inherited by forked children, so
DataLoader workers that outlive a killed trainer for a few seconds do not keep the folder locked.
(They are also dropped when the owner closes *any* descriptor of the lock file: do not open the
lock file of a folder you hold; :func:`read_owner` is for other processes' locks.)
The file holds JSON ``{"pid", "host", "command", "since"}`` of the owner; a second writer gets
:class:`FolderBusyError` naming the folder and that owner. Where locks are not supported (some
network file systems) the recorded pid is checked instead: a lock of a process that no longer runs
on this host is taken over. Locks are re-entrant within one process (a command that extracts
features into its own run folder does not lock itself out).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Union

LOCK_NAME = ".cpc-speech.lock"
PathLike = Union[str, Path]

_held: Dict[str, "_Lock"] = {}  # resolved lock path -> lock held by this process
_guard = threading.Lock()


class FolderBusyError(RuntimeError):
    """The folder (or output file) is being written by another process; the message names both."""


def lock_file_for(target: PathLike, kind: str = "folder") -> Path:
    """The lock file of a folder (inside it) or of an output file or an output that is renamed into
    place whole (``beside``: a file or folder; the lock is beside it, ``.<name>.lock``)."""
    target = Path(target)
    if kind == "folder":
        return target / LOCK_NAME
    if kind in ("file", "beside"):
        return target.parent / f".{target.name}.lock"
    raise ValueError(f"kind must be folder, file or beside, got {kind!r}")


def read_owner(lock_path: PathLike) -> Optional[Dict[str, object]]:
    """The owner recorded in a lock file, or None (no file, empty or unreadable)."""
    try:
        data = json.loads(Path(lock_path).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe_owner(owner: Optional[Dict[str, object]]) -> str:
    if not owner:
        return "another process"
    since = owner.get("since")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if isinstance(since, (int, float)) else ""
    cmd = f"cpc-speech {owner['command']}, " if owner.get("command") else ""
    return f"{cmd}pid {owner.get('pid')} on host {owner.get('host')}{when}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Lock:
    def __init__(self, path: Path, fd: int):
        self.path, self.fd, self.count = path, fd, 1


def _try_lock(fd: int) -> bool:
    """True when locked; False when another process holds it; raises OSError when unsupported."""
    import fcntl

    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _acquire(lock_path: Path, command: str, target: Path) -> _Lock:
    host = socket.gethostname()
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                locked = _try_lock(fd)
            except OSError:  # no locks on this file system: trust the recorded pid
                owner = read_owner(lock_path)
                pid = owner.get("pid") if owner else None
                if not owner or not isinstance(pid, int) or (owner.get("host") == host and (pid == os.getpid() or not _pid_alive(pid))):
                    locked = True  # no owner, or one that no longer runs on this host: take over
                else:
                    locked = False  # alive here, or on another host where we cannot tell
            if not locked:
                raise FolderBusyError(f"{target} is in use by {describe_owner(read_owner(lock_path))}; "
                                      f"wait for it to finish or write elsewhere")
            # the previous owner may have removed the file between our open and our lock: retry
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            record = json.dumps({"pid": os.getpid(), "host": host, "command": command, "since": round(time.time(), 3)})
            os.ftruncate(fd, 0)
            os.pwrite(fd, (record + "\n").encode(), 0)
            return _Lock(lock_path, fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise


def _release(lock: _Lock) -> None:
    with contextlib.suppress(OSError):
        os.unlink(lock.path)  # removed while still locked: a waiting opener notices (samestat) and retries
    with contextlib.suppress(OSError):
        os.close(lock.fd)


@contextlib.contextmanager
def hold_output(target: PathLike, command: str, kind: str = "folder", create: bool = True) -> Iterator[Path]:
    """Hold the lock of ``target`` (a folder, created when ``create``; or an output ``file``, whose
    folder is created) while the block runs. Raises :class:`FolderBusyError` when another process
    holds it, OSError (naming the path) when the lock file cannot be created."""
    target = Path(target)
    folder = target if kind == "folder" else target.parent
    if kind == "file" and target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; give the name of the file to write", str(target))
    if kind == "folder" and target.exists() and not target.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "is a file; give a folder to write into", str(target))
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise type(exc)(exc.errno, exc.strerror, exc.filename or str(folder)) from None
    elif not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    lock_path = lock_file_for(target, kind)
    key = str(lock_path.resolve())
    with _guard:
        lock = _held.get(key)
        if lock is not None:
            lock.count += 1
        else:
            try:
                lock = _held[key] = _acquire(lock_path, command, target)
            except FolderBusyError:
                raise
            except OSError as exc:  # e.g. a read-only or foreign folder: name the output, not the lock file
                raise type(exc)(exc.errno, exc.strerror, str(target)) from None
    try:
        yield lock_path
    finally:
        with _guard:
            lock.count -= 1
            if lock.count == 0:
                _held.pop(key, None)
                _release(lock)


def is_lock_file(path: PathLike) -> bool:
    """Whether ``path`` is one of this module's lock files (for listings that skip them)."""
    name = Path(path).name
    return name == LOCK_NAME or (name.startswith(".") and name.endswith(".lock"))


def locks_output(param: str, command: str, kind: str = "folder") -> Callable:
    """Decorator: hold the lock of the function's argument ``param`` (a folder or an output file;
    nothing when it is None) while the function runs. For commands and API functions that write
    one output, e.g. ``@locks_output("out", "probe", kind="file")``."""

    def wrap(func: Callable) -> Callable:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def run(*args, **kwargs):
            target = signature.bind(*args, **kwargs).arguments.get(param)
            if target is None:
                return func(*args, **kwargs)
            with hold_output(target, command, kind=kind):
                return func(*args, **kwargs)

        return run

    return wrap
