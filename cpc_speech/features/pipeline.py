"""Ordered, bounded thread pipelines: audio read ahead of the model (:func:`ordered_map`) and
encoder tasks spread over the CPU's threads while the context network consumes them in order
(:func:`encode_in_order`)."""

from __future__ import annotations

import collections
import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator, Optional, Sized, Tuple

import torch

from cpc_speech.kernels import single_thread
from cpc_speech.engine.precision import Precision

_END = object()


def ordered_map(fn, items: Iterable[Any], workers: int, ahead: int) -> Iterator[Tuple[Any, Any]]:
    """``(item, fn(item))`` in the order of ``items``. With ``workers`` > 0 the calls run on that
    many threads, at most ``ahead`` items in advance (bounded memory); an exception in a call is
    raised when its item comes up."""
    if workers <= 0:
        for item in items:
            yield item, fn(item)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque = collections.deque()
        it = iter(items)
        for item in it:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= ahead:
                break
        while pending:
            item, fut = pending.popleft()
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append((nxt, pool.submit(fn, nxt)))
            yield item, fut.result()


def encoder_threads(device: torch.device, tasks: int) -> int:
    """How many encoder tasks (chunks or batches) run at once, each on one intra-op thread: torch's
    thread count on CPU when there are at least two tasks, else 0 (one task at a time with all
    threads). On CPU the encoder then keeps every core busy while the context network, which runs
    its recurrent steps on one thread, works through the previous task (benchmarks/NOTES.md)."""
    threads = torch.get_num_threads()
    return threads if device.type == "cpu" and threads > 1 and tasks > 1 else 0


def encode_in_order(encode, tasks: Iterable[Any], device: torch.device,
                    precision: Optional[Precision] = None) -> Iterator[Tuple[Any, torch.Tensor]]:
    """``(task, encode(task))`` in order, the calls spread over :func:`encoder_threads` threads
    with one intra-op thread each (torch's thread count is set to 1 meanwhile and restored after),
    without autograd, in ``precision`` (autocast is per thread: it is entered in each worker).
    ``tasks`` may be a lazy iterable (then taken to hold several tasks): it is consumed at most
    a few tasks ahead."""
    workers = encoder_threads(device, len(tasks) if isinstance(tasks, Sized) else 2)
    autocast = precision.autocast if precision is not None else (lambda _device: contextlib.nullcontext())

    def run(task):
        with torch.inference_mode(), autocast(device):
            return encode(task)

    with single_thread(workers > 0):
        yield from ordered_map(run, tasks, workers, ahead=workers + 1)
