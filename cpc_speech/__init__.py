"""cpc_speech: self-supervised speech representations with Contrastive Predictive Coding.

Public face:

* :class:`CPCConfig` and :func:`preset` describe a model; :class:`CPCModel` is the network.
* :func:`load_model` restores an eval-mode model from a checkpoint file or a run folder.
* :func:`extract_features` turns a waveform (path, numpy array or tensor) into 10 ms frames.
* :class:`StreamingExtractor` gives the same frames incrementally from pushed audio chunks.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

__all__ = ["__version__", "CPCConfig", "CPCModel", "preset", "load_model", "extract_features", "StreamingExtractor"]

_LAZY = {
    "CPCConfig": ("cpc_speech.config", "CPCConfig"),
    "preset": ("cpc_speech.config", "preset"),
    "CPCModel": ("cpc_speech.model.cpc", "CPCModel"),
    "load_model": ("cpc_speech.engine.checkpoint", "load_model"),
    "extract_features": ("cpc_speech.features.api", "extract_features"),
    "StreamingExtractor": ("cpc_speech.features.streaming", "StreamingExtractor"),
}


def __getattr__(name):  # lazy imports keep `cpc-speech --help` fast
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'cpc_speech' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from cpc_speech.config import CPCConfig, preset
    from cpc_speech.engine.checkpoint import load_model
    from cpc_speech.features.api import extract_features
    from cpc_speech.model.cpc import CPCModel
    from cpc_speech.features.streaming import StreamingExtractor
