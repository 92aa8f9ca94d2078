"""Model parts: strided CNN encoder, causal context network, per-step prediction heads."""

from cpc_speech.model.cpc import CPCModel

__all__ = ["CPCModel"]
