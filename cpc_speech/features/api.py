"""Features of one waveform, or of a list of waveforms, from a trained (or random) CPC model.

    feats = extract_features("utt.flac", model="runs/cpc")            # (frames, hidden) c_t
    z = extract_features(wav, sample_rate=8000, model=m, layer="encoder")

* ``wav``: a path, a numpy array or a torch tensor, 1-D or 2-D in either layout (channels are
  averaged); arrays need ``sample_rate`` and are resampled to 16 kHz
  (:func:`cpc_speech.audio.load_waveform`).
* ``model``: a :class:`~cpc_speech.model.cpc.CPCModel`, a checkpoint file or a run folder.
* Output: float32 numpy ``(model.encoder.num_frames(n_samples_16k), dim)``; frame ``t`` is the 10 ms
  step starting at sample ``160 t`` (its encoder receptive field is ``[160 t - 153, 160 t + 312)``).

Long inputs are processed in exact chunks of ``chunk_seconds`` (default 2.5 s in float32, 5 s in
bf16) with bounded memory and the same result as one pass (:mod:`cpc_speech.features.inference`).

``precision="auto"`` (the default) runs the encoder's matrix products in bf16 where the CPU computes
bf16 fast (:mod:`cpc_speech.engine.precision`; the recurrent context stays float32 on CPU), else in float32;
``"fp32"`` forces float32. Features are returned as float32 either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import numpy as np
import torch

from cpc_speech.audio import load_waveform
from cpc_speech.features.inference import batch_forward, chunk_frames_for, forward_one
from cpc_speech.features.models import EvalMode, model_device, resolve_model, validate_layer
from cpc_speech.engine.precision import resolve as resolve_precision


def extract_features(
    wav: Any,
    sample_rate: Optional[int] = None,
    model: Any = None,
    layer: str = "context",
    device: Optional[Union[str, torch.device]] = None,
    chunk_seconds: Optional[float] = None,
    precision: str = "auto",
) -> np.ndarray:
    """Per-frame features of one waveform: float32 ``(model.encoder.num_frames(n_16k), dim)``.

    ``layer="context"`` gives c_t (dim = context hidden size), ``"encoder"`` gives z_t (dim = encoder
    channels); ``"context.N"`` and ``"encoder+context"``: see :mod:`cpc_speech.model.layers`. Inputs longer than ``chunk_seconds`` are processed in exact chunks (see the module
    docstring). Runs on ``device`` if given, else where the model is (CUDA if the model is on CUDA).
    ``precision``: ``auto``, ``fp32`` or ``bf16`` (module docstring).
    """
    model = resolve_model(model, device)
    validate_layer(layer, model)
    x = load_waveform(wav, sample_rate=sample_rate, min_samples=model.encoder.min_samples)
    dev = model_device(model)
    prec = resolve_precision(precision, dev, key="precision")
    chunk_frames = chunk_frames_for(model, prec, chunk_seconds)
    with torch.inference_mode(), EvalMode(model):
        out = forward_one(model, torch.from_numpy(x).to(dev), layer, chunk_frames, prec)
    return out.float().cpu().numpy()


def extract_features_batch(
    wavs: Sequence[Any],
    model: Any,
    layer: str = "context",
    device: Optional[Union[str, torch.device]] = None,
    sample_rate: Optional[int] = None,
    batch_seconds: float = 40.0,
    chunk_seconds: Optional[float] = None,
    precision: str = "auto",
) -> List[np.ndarray]:
    """Features of many waveforms (paths, arrays at ``sample_rate``, or tensors), batched.

    Same result as :func:`extract_features` on each input (to float rounding): inputs are sorted by
    length and padded into batches of at most ``batch_seconds`` of padded audio; the last encoder
    frames of each input, which see the padding, are recomputed exactly from its own tail before
    the (causal) context network runs. Inputs longer than ``chunk_seconds`` and instance-norm
    encoders go one by one.
    """
    model = resolve_model(model, device)
    validate_layer(layer, model)
    arrays = [load_waveform(w, sample_rate=None if isinstance(w, (str, Path)) else sample_rate,
                            min_samples=model.encoder.min_samples, name=f"input {i}") for i, w in enumerate(wavs)]
    prec = resolve_precision(precision, model_device(model), key="precision")
    return batch_forward(model, arrays, layer, batch_seconds, chunk_seconds, prec)
