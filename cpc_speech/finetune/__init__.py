"""CTC phone-recognition fine-tuning: phone transcripts, limited-label subsets, CTC heads, PER.

* :mod:`~cpc_speech.finetune.targets`: CTC classes of a phone set, and CTC label sequences from
  phone transcripts or frame alignments (files read by :mod:`cpc_speech.corpora.labels`);
* :mod:`~cpc_speech.finetune.subset`: seeded, speaker-stratified subsets of at most N hours;
* :mod:`~cpc_speech.finetune.per`: edit distance, phone error rate, greedy CTC decoding;
* :mod:`~cpc_speech.finetune.head`: linear / conv / conv+RNN CTC heads;
* :mod:`~cpc_speech.finetune.config`: the settings of a run (``finetune_config.yaml``);
* :mod:`~cpc_speech.finetune.data`: splits resolved against manifest and targets, the training subset;
* :mod:`~cpc_speech.finetune.conditions`: what the frozen / unfrozen / MFCC / from-scratch heads read;
* :mod:`~cpc_speech.finetune.evaluation`: CTC loss, dev/test decoding and PER;
* :mod:`~cpc_speech.finetune.loop`: one condition's epochs, early stopping and checkpoints;
* :mod:`~cpc_speech.finetune.run`: the conditions of a run in turn, in one output folder on the
  run machinery of :mod:`cpc_speech.engine`, resumable (``cpc-speech finetune``).
"""

from cpc_speech.finetune.head import HEAD_KINDS, CTCHead, HeadConfig
from cpc_speech.finetune.per import (
    EditCounts,
    ctc_min_frames,
    edit_counts,
    edit_distance,
    error_counts,
    greedy_decode,
    phone_error_rate,
)
from cpc_speech.finetune.subset import Subset, select_hours
from cpc_speech.finetune.targets import CTCClasses, Transcript, load_targets

__all__ = [
    "HEAD_KINDS", "CTCHead", "HeadConfig",
    "EditCounts", "ctc_min_frames", "edit_counts", "edit_distance", "error_counts", "greedy_decode", "phone_error_rate",
    "Subset", "select_hours",
    "CTCClasses", "Transcript", "load_targets",
    "CONDITIONS", "FinetuneConfig", "FinetuneError", "FinetuneWarning", "Finetuner", "run_finetune",
]


def __getattr__(name):  # the loop pulls in the model code; import it on first use
    if name in ("CONDITIONS", "FinetuneConfig", "FinetuneError", "FinetuneWarning"):
        from cpc_speech.finetune import config

        return getattr(config, name)
    if name in ("Finetuner", "run_finetune"):
        from cpc_speech.finetune import run

        return getattr(run, name)
    raise AttributeError(f"module 'cpc_speech.finetune' has no attribute {name!r}")
