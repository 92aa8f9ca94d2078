"""Pretraining: the training loop, learning-rate schedules, distributed helpers."""
