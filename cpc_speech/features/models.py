"""What a feature request reads: the model (object, checkpoint file or run folder), its device and
the layer, checked with one error type (:class:`FeatureError`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import torch

from cpc_speech.model.layers import check_layer

LAYERS = ("context", "encoder")


class FeatureError(ValueError):
    """A problem with a feature request or a feature folder; the message names it."""


def resolve_model(model: Any, device: Optional[Union[str, torch.device]] = None):
    """A CPCModel from a model, checkpoint file or run folder, on ``device`` (default: where it is,
    CPU for files). ``None`` is an error."""
    from cpc_speech.model.cpc import CPCModel

    if model is None:
        raise FeatureError(
            "extract_features needs model=: a CPCModel, a checkpoint file (.pt) or a run folder "
            "(e.g. model='runs/cpc'); use cpc_speech.features.mfcc.mfcc_features for MFCC features"
        )
    if isinstance(model, (str, Path)):
        from cpc_speech.engine.checkpoint import load_model

        return load_model(model, device=device)
    if isinstance(model, CPCModel):
        return model.to(device) if device is not None else model
    raise FeatureError(f"model must be a CPCModel, a checkpoint file or a run folder, got {type(model).__name__}")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def validate_layer(layer: str, model=None) -> str:
    """``layer``: one of :data:`LAYERS` or a name of :mod:`cpc_speech.model.layers` (``context.N``,
    ``encoder+context``), checked against the model's context layers when given."""
    try:
        return check_layer(layer, None if model is None else model.cfg)
    except ValueError as exc:
        raise FeatureError(str(exc)) from None


def chunkable(model) -> bool:
    """Whether the encoder can run in chunks exactly (not with instance norm)."""
    return model.cfg.encoder.norm != "instance"


class EvalMode:
    """Put a model in eval mode for a block and restore its previous mode."""

    def __init__(self, model):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was_training)
        return False
