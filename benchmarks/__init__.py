"""Benchmarks of cpc_speech: ``python -m benchmarks.run`` (same as ``cpc-speech bench``).

The measuring code lives in :mod:`cpc_speech.bench` so that the installed package can run it;
results go to ``benchmarks/results/<machine>-<YYYY-MM-DD>.json`` and are discussed in
``benchmarks/NOTES.md``.
"""
