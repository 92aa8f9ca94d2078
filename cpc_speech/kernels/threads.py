"""Thread settings for the sequential parts of a model on CPU."""

from __future__ import annotations

import torch


class single_thread:
    """Run a block with one intra-op thread on CPU.

    A GRU/LSTM step multiplies tiny matrices; with several OpenMP threads each of the thousands of
    steps pays a barrier, and when another process holds a core the barrier waits for a time slice:
    measured 0.036 s (1 thread) against 4.9 s (2 threads, other core busy) for 1000 steps of a
    128-unit GRU. One thread is never slower here (benchmarks/NOTES.md).
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def __enter__(self):
        self.saved = torch.get_num_threads()
        if self.enabled and self.saved > 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.enabled and self.saved > 1:
            torch.set_num_threads(self.saved)
