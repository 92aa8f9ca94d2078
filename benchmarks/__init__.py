"""Benchmarks of cpc_speech, outside the package (not installed): ``make bench`` runs
``python -m benchmarks.run`` from a checkout with the package installed.

``run`` is the driver, ``configs`` what is measured, ``jobs`` the measurements (each in a fresh
process), ``flops`` the analytic FLOP counts, ``machine`` the host facts, ``report`` the table and the
check against ``targets.json``; the other modules are single-purpose scripts. Results go to
``benchmarks/results/`` and are discussed in ``benchmarks/NOTES.md``.
"""
