"""InfoNCE loss and negative samplers."""

from cpc_speech.loss.infonce import InfoNCELoss, InfoNCEResult
from cpc_speech.loss.negatives import NegativeSampler, parse_sampling

__all__ = ["InfoNCELoss", "InfoNCEResult", "NegativeSampler", "parse_sampling"]
