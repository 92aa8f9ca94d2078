"""Features from a CPC model (or MFCC): one waveform, many, a pushed stream, or a whole corpus.

Modules, one concept each:

* :mod:`~cpc_speech.features.api`: :func:`extract_features`, :func:`extract_features_batch`;
* :mod:`~cpc_speech.features.models`: the model a request reads (object, checkpoint, run folder),
  its layer, :class:`FeatureError`;
* :mod:`~cpc_speech.features.inference`: exact chunked and batched inference;
* :mod:`~cpc_speech.features.pipeline`: ordered bounded thread pipelines (``ordered_map``);
* :mod:`~cpc_speech.features.streaming`: :class:`StreamingExtractor` (pushed audio);
* :mod:`~cpc_speech.features.featurizer`: :class:`Featurizer` (CPC layer or MFCC) in a
  :class:`FrameMode` or :class:`WindowMode`;
* :mod:`~cpc_speech.features.store`: the feature folder (``features.tsv``, ``meta.json``, ``.npy``);
* :mod:`~cpc_speech.features.corpus`: :func:`extract_corpus` (resumable, threads or processes);
* :mod:`~cpc_speech.features.mfcc`: the MFCC baseline.

The names below are the package's public API.
"""

from cpc_speech.features.api import extract_features, extract_features_batch
from cpc_speech.features.corpus import CorpusFeatures, extract_corpus
from cpc_speech.features.featurizer import Featurizer, FrameMode, WindowMode, make_featurizer
from cpc_speech.features.mfcc import mfcc_features
from cpc_speech.features.models import FeatureError
from cpc_speech.features.store import load_feature_dir, read_index, read_meta
from cpc_speech.features.streaming import StreamingError, StreamingExtractor, stream_features

__all__ = [
    "extract_features", "extract_features_batch", "extract_corpus", "CorpusFeatures", "Featurizer", "FrameMode",
    "WindowMode", "make_featurizer", "mfcc_features", "FeatureError", "load_feature_dir", "read_index", "read_meta",
    "StreamingExtractor", "StreamingError", "stream_features",
]
