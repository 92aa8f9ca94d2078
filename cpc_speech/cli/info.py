"""``cpc-speech info``: versions, device, the automatic precision, and a model preset's sizes. The
options are the fields of :class:`InfoConfig` (generated flags, ``--config FILE``, ``key=value``)."""

from __future__ import annotations

from dataclasses import dataclass

from cpc_speech.config import PRESETS
from cpc_speech.settings import check_choices, setting


@dataclass
class InfoConfig:
    """``cpc-speech info``: what to describe."""

    preset: str = setting("default", choices=PRESETS, help="model preset whose sizes are printed")

    def validate(self) -> "InfoConfig":
        check_choices(self, flags=True)
        return self


def register(sub) -> None:
    from cpc_speech.cli.config_args import add_config_arguments

    p = sub.add_parser("info", help="print versions, device and the sizes of a model preset")
    add_config_arguments(p, InfoConfig)
    p.set_defaults(func=run)


def run(args) -> int:
    import platform

    import numpy as np
    import torch

    from cpc_speech import __version__
    from cpc_speech.cli.config_args import config_from_args
    from cpc_speech.config import preset
    from cpc_speech.engine.precision import resolve
    from cpc_speech.model.cpc import CPCModel

    cfg = config_from_args(InfoConfig, args, where="info settings")
    model = CPCModel(preset(cfg.preset))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"cpc-speech {__version__}  python {platform.python_version()}  torch {torch.__version__}  numpy {np.__version__}")
    print(f"device: {'cuda (' + torch.cuda.get_device_name(0) + ')' if torch.cuda.is_available() else 'cpu'}; torch threads {torch.get_num_threads()}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"precision auto (train.amp, extraction) on this {device}: {resolve('auto', device).describe()}")
    enc = model.encoder
    print(f"preset {cfg.preset}: {n_params / 1e6:.2f} M parameters; encoder downsampling {enc.downsampling} samples, receptive field {enc.receptive_field} samples")
    print(f"20480 samples -> {enc.num_frames(20480)} frames")
    return 0
