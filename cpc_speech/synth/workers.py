"""The one protocol the generator uses to run work in fresh processes.

eSpeak NG keeps state between utterances, so a reproducible rendering runs in a process that has
never synthesised. Two ways to get one, with the same messages:

* :func:`run_in_fresh_process`: fork a child of this process, run ``fn(*args)`` there, read the
  reply through a pipe (one call per child);
* :func:`map_in_workers`: ``jobs`` fresh interpreters (``python -c``; not ``multiprocessing``, which
  would re-import the caller's main script) each answer requests on stdin with replies on stdout,
  one at a time; the parent hands out the next request to whichever worker answers first.

A message is an 8-byte little-endian length, then a pickle. A request is ``(fn, args)`` (``fn`` a
module-level function, pickled by name); a reply is ``("ok", value)`` or ``("error", "Type:
message")``. Messages only pass between processes of this package through pipes, never files.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
from pathlib import Path
from typing import Any, Callable, List, Sequence, Tuple

_SIZE = struct.Struct("<Q")


class WorkerError(RuntimeError):
    """Work in a fresh process failed, or the process died without a reply."""


def encode(obj: Any) -> bytes:
    """One message: length prefix + pickle."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _SIZE.pack(len(data)) + data


def send(stream, obj: Any) -> None:
    stream.write(encode(obj))
    stream.flush()


def receive(stream) -> Any:
    """The next message on ``stream``; EOFError when it ends (or ends inside a message)."""
    head = stream.read(_SIZE.size)
    if len(head) < _SIZE.size:
        raise EOFError
    size = _SIZE.unpack(head)[0]
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def answer(fn: Callable, args: Sequence) -> Tuple[str, Any]:
    """The reply to the request ``(fn, args)``."""
    try:
        return "ok", fn(*args)
    except Exception as exc:  # reported to the parent
        return "error", f"{type(exc).__name__}: {exc}"


def _encoded_reply(fn: Callable, args: Sequence) -> bytes:
    reply = answer(fn, args)
    try:
        return encode(reply)
    except Exception as exc:  # a result that cannot be pickled
        return encode(("error", f"{type(exc).__name__}: {exc}"))


def run_in_fresh_process(fn: Callable, *args) -> Any:
    """``fn(*args)`` run in a child forked from this process; its (picklable) result.

    The child starts from this process's state: as long as this process never synthesises, every
    child sees a synthesiser that has never run. Without ``os.fork`` (Windows) ``fn`` runs here.
    """
    if not hasattr(os, "fork"):  # pragma: no cover - Windows
        return fn(*args)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read_fd)
            with os.fdopen(write_fd, "wb") as f:
                f.write(_encoded_reply(fn, args))
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        try:
            reply = receive(f)
        except EOFError:
            reply = None
    _, status = os.waitpid(pid, 0)
    if reply is None:
        raise WorkerError(f"the fresh process died without a result (wait status {status})")
    kind, value = reply
    if kind != "ok":
        raise WorkerError(value)
    return value


def worker_main() -> None:
    """Loop of a worker interpreter: requests on stdin, replies on the original stdout."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the parent, which ends us
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints go to stderr, not into the protocol
    requests = sys.stdin.buffer
    while True:
        try:
            fn, args = receive(requests)
        except EOFError:
            break
        channel.write(_encoded_reply(fn, args))
        channel.flush()


def map_in_workers(
    fn: Callable,
    items: Sequence,
    jobs: int,
    extra_args: Tuple = (),
    describe: Callable[[Any], str] = repr,
    progress: bool = False,
    desc: str = "work",
    unit: str = "it",
) -> List[Any]:
    """``[fn(item, *extra_args) for item in items]``, computed in ``jobs`` worker interpreters.

    ``describe(item)`` names an item in errors (``"rendering X failed: ..."``); the first failure
    stops the run (unfinished workers are killed).
    """
    import selectors
    import subprocess

    from tqdm import tqdm

    root = str(Path(__file__).resolve().parents[2])
    boot = f"import sys; sys.path.insert(0, {root!r}); from cpc_speech.synth.workers import worker_main; worker_main()"
    jobs = max(1, min(int(jobs), len(items)))
    procs = [
        subprocess.Popen([sys.executable, "-c", boot], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(jobs)
    ]
    results: List[Any] = [None] * len(items)
    pending = list(reversed(range(len(items))))
    busy = {}  # worker -> index of the item it works on
    sel = selectors.DefaultSelector()
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress, dynamic_ncols=True)

    def hand_out(worker: int) -> None:
        if pending:
            busy[worker] = pending.pop()
            send(procs[worker].stdin, (fn, (items[busy[worker]],) + tuple(extra_args)))

    try:
        for i, proc in enumerate(procs):
            sel.register(proc.stdout, selectors.EVENT_READ, i)
            hand_out(i)
        while busy:
            for key, _ in sel.select():
                i = key.data
                item = items[busy[i]]
                try:
                    kind, value = receive(procs[i].stdout)
                except EOFError:
                    raise WorkerError(f"a worker process died while {describe(item)}") from None
                if kind != "ok":
                    raise WorkerError(f"{describe(item)} failed: {value}")
                results[busy.pop(i)] = value
                bar.update(1)
                hand_out(i)
    finally:
        bar.close()
        sel.close()
        for proc in procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for proc in procs:
            if busy:  # interrupted: do not wait for unfinished work
                proc.kill()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
    return results
