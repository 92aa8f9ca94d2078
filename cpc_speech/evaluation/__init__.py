"""Evaluations of learned representations beyond linear probes: the ABX phone discriminability
(:mod:`~cpc_speech.evaluation.abx`, item files in :mod:`~cpc_speech.evaluation.items`, the DTW in
:mod:`~cpc_speech.evaluation.dtw`) and discrete units (:mod:`~cpc_speech.evaluation.units`)."""
