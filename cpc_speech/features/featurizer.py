"""What turns audio into the features of a corpus: a CPC model read at one layer, or MFCC, in one
of two modes (:class:`FrameMode`: a vector per 10 ms frame; :class:`WindowMode`: a vector per
fixed-length window), with the fingerprint and description that a feature folder records."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from cpc_speech.audio import SAMPLE_RATE
from cpc_speech.features.inference import batch_forward, from_encoder
from cpc_speech.features.mfcc import DIM as MFCC_DIM
from cpc_speech.features.mfcc import HOP, mfcc_features
from cpc_speech.features.models import EvalMode, FeatureError, model_device, resolve_model, validate_layer
from cpc_speech.model.layers import layer_dim
from cpc_speech.engine.checkpoint import weights_fingerprint
from cpc_speech.engine.precision import Precision
from cpc_speech.engine.precision import resolve as resolve_precision

META_VERSION = 1  # of the featuriser description in a feature folder's meta.json


@dataclass(frozen=True)
class FrameMode:
    """One feature vector per 10 ms frame; written ``"frames"`` in configs and meta.json."""

    def __str__(self) -> str:
        return "frames"


@dataclass(frozen=True)
class WindowMode:
    """One vector per non-overlapping window of ``samples`` 16 kHz samples, each window run through
    the model on its own: the last c_t of the window for a context layer, the mean over the window
    for the encoder layer and for MFCC. Written ``"windows:N"`` in configs and meta.json."""

    samples: int

    def __post_init__(self):
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise FeatureError(f"feature mode windows:N needs N >= 1 samples, got {self.samples!r}")

    def __str__(self) -> str:
        return f"windows:{self.samples}"


FeatureMode = Union[FrameMode, WindowMode]
FRAMES = FrameMode()


def parse_mode(mode: Union[str, FeatureMode]) -> FeatureMode:
    """A :class:`FrameMode` or :class:`WindowMode` from itself or its string (``"frames"``,
    ``"windows:N"``: the form of configs, the CLI and meta.json)."""
    if isinstance(mode, (FrameMode, WindowMode)):
        return mode
    if mode == "frames":
        return FRAMES
    if isinstance(mode, str) and mode.startswith("windows:"):
        try:
            samples = int(mode.split(":", 1)[1])
        except ValueError:
            raise FeatureError(f"feature mode {mode!r}: N in windows:N must be an integer (samples)") from None
        return WindowMode(samples)
    raise FeatureError(f"unknown feature mode {mode!r} (frames or windows:N)")


@dataclass
class Featurizer:
    """A CPC model (at ``layer``) or MFCC (``model is None``) in ``mode`` (a :class:`FrameMode` or
    :class:`WindowMode`, or its string), for :func:`cpc_speech.features.corpus.extract_corpus`."""

    model: Any = None
    layer: str = "context"
    mode: FeatureMode = FRAMES
    name: str = "model"
    checkpoint: Optional[str] = None
    precision: str = "auto"  # auto | fp32 | bf16 (resolved on the model's device)
    _fingerprint: Optional[str] = field(default=None, repr=False)
    _precision: Optional[Precision] = field(default=None, repr=False)

    def __post_init__(self):
        self.mode = parse_mode(self.mode)

    @property
    def is_mfcc(self) -> bool:
        return self.model is None

    @property
    def window_samples(self) -> Optional[int]:
        """Samples per window in a :class:`WindowMode`, None for frames."""
        return self.mode.samples if isinstance(self.mode, WindowMode) else None

    def resolved_precision(self) -> Precision:
        """The precision the model runs in (float32 for MFCC)."""
        if self._precision is None:
            if self.is_mfcc:
                self._precision = Precision("fp32", "MFCC")
            else:
                self._precision = resolve_precision(self.precision, model_device(self.model), key="precision")
        return self._precision

    def min_samples(self) -> int:
        """Shortest clip (samples) that gives a frame; shorter ones get empty features in
        :func:`~cpc_speech.features.corpus.extract_corpus`."""
        if self.window_samples:  # shorter inputs just have no window
            return 1
        return 1 if self.is_mfcc else self.model.encoder.min_samples

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return MFCC_DIM if self.is_mfcc else layer_dim(self.model.cfg, self.layer)

    def fingerprint(self) -> str:
        """Hash of the weights (or 'mfcc'): identifies the featuriser for the cache."""
        if self._fingerprint is None:
            if self.is_mfcc:
                self._fingerprint = "mfcc-v1"
            else:
                self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint

    def meta(self, dtype: str) -> Dict[str, Any]:
        """The description a feature folder's meta.json holds for features saved as ``dtype``."""
        from cpc_speech.settings import to_dict

        info: Dict[str, Any] = {
            "meta_version": META_VERSION,
            "featurizer": "mfcc" if self.is_mfcc else "cpc",
            "name": self.name,
            "layer": None if self.is_mfcc else self.layer,
            "mode": str(self.mode),
            "dtype": dtype,
            "precision": self.resolved_precision().name,
            "fingerprint": self.fingerprint(),
        }
        if not self.is_mfcc:
            ckpt = self.checkpoint or getattr(self.model, "checkpoint_path", None)
            info["checkpoint"] = str(Path(ckpt).resolve()) if ckpt else None
            info["checkpoint_mtime"] = os.path.getmtime(ckpt) if ckpt and os.path.exists(ckpt) else None
            info["model_config"] = to_dict(self.model.cfg)
        return info

    def features(self, arrays: List[np.ndarray], batch_seconds: float = 40.0,
                 chunk_seconds: Optional[float] = None) -> List[np.ndarray]:
        """Float32 features of 16 kHz 1-D arrays (each at least :meth:`min_samples` long), in
        order: (frames, dim) per array, or (windows, dim) in a :class:`WindowMode`."""
        if self.is_mfcc:
            return [_mfcc_features(a, self.window_samples) for a in arrays]
        if not self.window_samples:
            return batch_forward(self.model, arrays, self.layer, batch_seconds, chunk_seconds, self.resolved_precision())
        return self._window_features(arrays, batch_seconds)

    def _window_features(self, arrays: List[np.ndarray], batch_seconds: float) -> List[np.ndarray]:
        """Window protocol: every window is an independent input of the same length (one batch each)."""
        win = self.window_samples
        model, enc = self.model, self.model.encoder
        windows, owner = [], []
        for j, a in enumerate(arrays):
            k = a.size // win if win >= enc.min_samples else 0
            windows.extend(a[i * win:(i + 1) * win] for i in range(k))
            owner.extend([j] * k)
        dev = model_device(model)
        precision = self.resolved_precision()
        per_batch = max(1, int(batch_seconds * SAMPLE_RATE) // win)
        vecs = []
        with torch.inference_mode(), EvalMode(model), precision.autocast(dev):
            for s in range(0, len(windows), per_batch):
                x = torch.from_numpy(np.stack(windows[s:s + per_batch])).to(dev)
                z = enc(x)
                if self.layer != "encoder":  # the last frame of the window (for encoder+context: of both)
                    vecs.append(from_encoder(model, z, self.layer)[0][:, -1].float().cpu().numpy())
                else:
                    vecs.append(z.mean(dim=1).float().cpu().numpy())
        allv = np.concatenate(vecs) if vecs else np.zeros((0, self.dim), np.float32)
        owner_a = np.asarray(owner, dtype=np.int64)
        return [np.ascontiguousarray(allv[owner_a == j]) for j in range(len(arrays))]

    def same_features(self, old: Dict[str, Any], dtype: str) -> bool:
        """Whether a folder's meta.json describes features this featuriser would produce."""
        new = self.meta(dtype)
        keys = ("meta_version", "featurizer", "layer", "mode", "dtype", "fingerprint")
        # folders written before the precision was recorded hold float32 features
        return all(old.get(k) == new.get(k) for k in keys) and old.get("precision", "fp32") == new["precision"]

    def spec(self) -> Dict[str, Any]:
        """What another process needs to rebuild this featuriser (:func:`featurizer_from_spec`),
        with the resolved precision, so that every process computes the same features."""
        spec: Dict[str, Any] = {"layer": self.layer, "mode": str(self.mode), "name": self.name,
                                "precision": self.resolved_precision().name}
        if self.is_mfcc:
            spec["model"] = "mfcc"
        else:
            from cpc_speech.settings import to_dict

            spec["model_config"] = to_dict(self.model.cfg)
            spec["state_dict"] = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
            spec["device"] = str(model_device(self.model))
        return spec


def featurizer_from_spec(spec: Dict[str, Any]) -> Featurizer:
    """The featuriser that :meth:`Featurizer.spec` describes (its model in eval mode)."""
    if spec.get("model") == "mfcc":
        return Featurizer(None, layer="mfcc", mode=spec["mode"], name=spec["name"])
    from cpc_speech.config import CPCConfig
    from cpc_speech.settings import from_dict
    from cpc_speech.model.cpc import CPCModel

    model = CPCModel(from_dict(CPCConfig, spec["model_config"]).validate()).eval()
    model.load_state_dict(spec["state_dict"], strict=True)
    model.to(spec["device"])
    return Featurizer(model, layer=spec["layer"], mode=spec["mode"], name=spec["name"], precision=spec["precision"])


def make_featurizer(model: Any, layer: str = "context", mode: Union[str, FeatureMode] = FRAMES, device=None,
                    name: Optional[str] = None, precision: str = "auto") -> Featurizer:
    """``model``: a CPCModel, a checkpoint file / run folder, or ``"mfcc"``; ``mode``: a
    :class:`FrameMode` / :class:`WindowMode` or ``"frames"`` / ``"windows:N"``; ``precision``:
    auto, fp32 or bf16 (:mod:`cpc_speech.features.api`)."""
    mode = parse_mode(mode)
    if isinstance(model, str) and model == "mfcc":
        f = Featurizer(None, layer="mfcc", mode=mode, name=name or "mfcc")
    else:
        ckpt = None
        if isinstance(model, (str, Path)):
            from cpc_speech.engine.checkpoint import resolve_checkpoint

            ckpt = str(resolve_checkpoint(model))
        m = resolve_model(model, device)
        f = Featurizer(m, layer=validate_layer(layer, m), mode=mode, name=name or "model", checkpoint=ckpt,
                       precision=precision)
    f.resolved_precision()  # validate precision
    return f


def _mfcc_features(wav: np.ndarray, window_samples: Optional[int]) -> np.ndarray:
    """MFCC frames of a 16 kHz array, or their means over non-overlapping windows of
    ``window_samples`` ((0, dim) for a clip shorter than a window)."""
    f = mfcc_features(wav)
    if window_samples:
        per = window_samples // HOP
        k = f.shape[0] // per
        f = f[: k * per].reshape(k, per, f.shape[1]).mean(axis=1)
    return f.astype(np.float32)
