"""What each fine-tuning condition trains its CTC head on.

* ``frozen``: the pretrained model's features, computed once through
  :func:`cpc_speech.features.make_featurizer` and cached as float16 (:class:`CachedFeatures`);
* ``mfcc``: MFCC + deltas, cached the same way;
* ``unfrozen``: a fresh copy of the pretrained model, trained with the head (:class:`BackboneFeatures`);
* ``scratch``: the pretrained architecture with random weights, trained with the head.
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from cpc_speech.config import preset
from cpc_speech.corpora.manifest import Utterance
from cpc_speech.engine.precision import Precision, resolve
from cpc_speech.finetune.config import END_TO_END, FinetuneConfig
from cpc_speech.model.layers import layer_dim


class FeatureSource:
    """Turns a batch of utterances into padded features (batch, frames, dim) on the training
    device, and their valid lengths (batch,) on the CPU."""

    dim: int
    backbone: Optional[torch.nn.Module] = None  # trainable network, if any

    def batch(self, utts: Sequence[Utterance]) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def train(self, mode: bool = True) -> None:
        if self.backbone is not None:
            self.backbone.train(mode)


class CachedFeatures(FeatureSource):
    """Precomputed per-utterance features (id -> (frames, dim) tensor, any float dtype)."""

    def __init__(self, cache: Dict[str, torch.Tensor], device: torch.device):
        self.cache = cache
        self.device = device
        self.dim = next(iter(cache.values())).shape[1]

    def batch(self, utts):
        feats = [self.cache[u.id].float() for u in utts]
        lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
        return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(self.device), lengths


class BackboneFeatures(FeatureSource):
    """A CPC model run on zero-padded waveforms, read at ``layer`` (:mod:`cpc_speech.model.layers`),
    in ``precision`` (the features come out as float32)."""

    def __init__(self, model: torch.nn.Module, wav_fn: Callable[[Utterance], np.ndarray], layer: str,
                 device: torch.device, precision, freeze_norm_statistics: bool = False):
        self.backbone = model.to(device)
        self.freeze_norm_statistics = freeze_norm_statistics
        self.wav_fn = wav_fn
        self.layer = layer
        self.device = device
        self.precision = precision
        self.dim = layer_dim(model.cfg, layer)

    def train(self, mode: bool = True) -> None:
        """Training mode; with ``freeze_norm_statistics`` batch norms keep their running statistics
        (a pretrained network's statistics, not those of padded fine-tuning batches)."""
        self.backbone.train(mode)
        if mode and self.freeze_norm_statistics:
            for m in self.backbone.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def batch(self, utts):
        from cpc_speech.features.inference import from_encoder

        wavs = [torch.from_numpy(self.wav_fn(u)) for u in utts]
        lengths = torch.tensor([self.backbone.encoder.num_frames(w.shape[0]) for w in wavs], dtype=torch.long)
        x = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True).to(self.device)
        with self.precision.autocast(self.device):
            feats = from_encoder(self.backbone, self.backbone.encoder(x), self.layer)[0]
        return feats.float(), lengths.clamp_max(feats.shape[1])



class ConditionSources:
    """The inputs of every condition of one run: the pretrained model (loaded once, never
    modified), the waveforms (kept in memory when an end-to-end condition reads them every epoch)
    and the cached features. ``utterances``: returns every utterance of the run's splits."""

    def __init__(self, cfg: FinetuneConfig, device: torch.device, utterances: Callable[[], List[Utterance]], progress: bool):
        self.cfg = cfg
        self.device = device
        self.utterances = utterances
        self.progress = progress
        self.frozen_cache: Optional[Dict[str, torch.Tensor]] = None
        self.mfcc_cache: Optional[Dict[str, torch.Tensor]] = None
        self._pretrained = None
        self._model_cfg = None
        self._precision: Optional[Precision] = None
        self._wavs: Dict[str, np.ndarray] = {}

    def precision(self) -> Precision:
        """The precision the CPC networks run in on this device (heads and CTC stay float32)."""
        if self._precision is None:
            self._precision = resolve(self.cfg.precision, self.device, key="precision")
        return self._precision

    def pretrained(self):
        """The pretrained model (loaded once, eval mode, never modified)."""
        if self._pretrained is None:
            from cpc_speech.engine.checkpoint import load_model

            self._pretrained = load_model(self.cfg.model, device=self.device)
            for p in self._pretrained.parameters():
                p.requires_grad_(False)
        return self._pretrained

    def model_config(self):
        """The architecture of the CPC networks: the pretrained model's, else ``preset``."""
        if self._model_cfg is None:
            self._model_cfg = self.pretrained().cfg if self.cfg.model else preset(self.cfg.preset)
        return self._model_cfg

    def encoder(self):
        """The CPC encoder (its frame arithmetic decides which utterances are long enough)."""
        from cpc_speech.model.encoder import Encoder

        return self.pretrained().encoder if self.cfg.model else Encoder(self.model_config().encoder)

    def wav(self, u: Utterance) -> np.ndarray:
        w = self._wavs.get(u.id)
        if w is None:
            from cpc_speech.audio import read_audio

            w = read_audio(u.path)
            if any(c in END_TO_END for c in self.cfg.conditions):
                self._wavs[u.id] = w  # read every epoch: keep in memory
        return w

    def _compute_cache(self, desc: str, featurizer) -> Dict[str, torch.Tensor]:
        """Features of every utterance through :class:`cpc_speech.features.Featurizer` (the
        extraction code the probes use), in blocks of about a minute of audio, kept as float16."""
        from tqdm import tqdm

        utts = self.utterances()
        cache: Dict[str, torch.Tensor] = {}
        block: List[Utterance] = []
        bar = tqdm(total=len(utts), desc=desc, unit="utt", disable=not self.progress, leave=False)

        def flush():
            for u, f in zip(block, featurizer.features([self.wav(u) for u in block])):
                cache[u.id] = torch.from_numpy(f).to(torch.float16)  # half the memory
            bar.update(len(block))
            block.clear()

        seconds = 0.0
        for u in utts:
            block.append(u)
            seconds += u.duration
            if seconds >= 60.0:
                flush()
                seconds = 0.0
        if block:
            flush()
        bar.close()
        return cache

    def frozen_features(self) -> Dict[str, torch.Tensor]:
        if self.frozen_cache is None:
            from cpc_speech.features.featurizer import make_featurizer

            feat = make_featurizer(self.pretrained(), self.cfg.features, precision=self.cfg.precision)
            self.frozen_cache = self._compute_cache("pretrained features", feat)
        return self.frozen_cache

    def mfcc_features(self) -> Dict[str, torch.Tensor]:
        if self.mfcc_cache is None:
            from cpc_speech.features.featurizer import make_featurizer

            self.mfcc_cache = self._compute_cache("mfcc features", make_featurizer("mfcc"))
        return self.mfcc_cache

    def source(self, name: str) -> FeatureSource:
        """The feature source of condition ``name`` (end to end: a new trainable network)."""
        cfg = self.cfg
        if name == "frozen":
            return CachedFeatures(self.frozen_features(), self.device)
        if name == "mfcc":
            return CachedFeatures(self.mfcc_features(), self.device)
        if name == "unfrozen":
            from cpc_speech.engine.checkpoint import load_model

            model = load_model(cfg.model)  # a fresh copy: the shared pretrained model stays untouched
        else:
            from cpc_speech.model.cpc import CPCModel

            torch.manual_seed(cfg.seed + 7919)
            model = CPCModel(copy.deepcopy(self.model_config()))
        for p in model.parameters():
            p.requires_grad_(True)
        return BackboneFeatures(model, self.wav, cfg.features, self.device, self.precision(), freeze_norm_statistics=name == "unfrozen")
