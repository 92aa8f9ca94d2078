"""Pretraining: one optimisation step (:mod:`~cpc_speech.train.step`) and the loop around it
(:mod:`~cpc_speech.train.trainer`); the run machinery is in :mod:`cpc_speech.engine`."""
