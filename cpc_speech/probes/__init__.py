"""Linear probes on frozen features: phones (per frame) and speakers (per utterance or window).

Entry points: :func:`cpc_speech.probes.phone.run_phone_probe`,
:func:`cpc_speech.probes.speaker.run_speaker_probe`, and ``cpc-speech probe {phone,speaker}``.

Result JSON (written to ``--out``; read back, checked key by key, as
:class:`cpc_speech.results.probe.ProbeResult`, which the report uses)::

    {
      "task": "phone" | "speaker",
      "protocol": "frame" | "frame+-N" (phone) | "utterance" | "window" (speaker),
      "layer": "context" | "encoder" | "context.N" | "encoder+context",
      "results": {
        "model":       ENTRY,
        "mfcc":        ENTRY,          # baselines present unless disabled
        "random_init": ENTRY
      },
      "labels": [name of class 0, name of class 1, ...],   # phones, or speaker ids
      "majority": {"label": str, "accuracy": float},       # most frequent train class on test
      "model_path": str, "seconds": float,
      "dev_ids": [utterance ids of the dev split carved from train],
      ... inputs: "manifest", "alignments", "train_split", "test_split", "dev_fraction", "seed",
          "fit_config", "cache_dir"; speaker: "window_frames", "test_dropped_unseen_speakers"
    }

    ENTRY = {
      "accuracy": float in [0, 1],              # test accuracy (frames, utterances or windows)
      "train_utterances": n, "train_frames": n, # whole train split (fit + dev)
      "fit_utterances": n,   "fit_frames": n,   # train minus dev: the probe is fit on these (on the
                                                # whole train split with best.refit_on_train)
      "dev_utterances": n,   "dev_frames": n,
      "test_utterances": n,  "test_frames": n,
      "short_utterances": n,                    # split utterances left out: too short for one
                                                # example (frame receptive field or window)
      ("train_examples", "fit_examples", "dev_examples", "test_examples", "speakers": speaker probe)
      "feature_dim": n,
      "best": {"weight_decay", "epochs", "dev_accuracy", "dev_loss", "optimizer", "lr", "batch_size", "refit_on_train"},
      "per_class_accuracy": {name: float or null},  # recall per true class on test (null: absent)
      "per_class_count": {name: n},
      "confusion": [[n, ...], ...],             # rows = true class, columns = predicted, label order
      "dev_curve": {"<weight decay>": [dev accuracy after epoch 1, 2, ...]},
      "seconds": float                          # probe fitting time (excluding extraction)
    }
"""

from cpc_speech.probes.splits import carve_dev  # noqa: F401
from cpc_speech.probes.linear import FitConfig, ProbeData, select_and_fit, train_probe  # noqa: F401
