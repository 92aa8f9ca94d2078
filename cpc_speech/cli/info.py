"""``cpc-speech info``: versions, device, the automatic precision, and a model preset's sizes."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("info", help="print versions, device and the sizes of a model preset")
    p.add_argument("--preset", default="default", help="paper | default | tiny (default: %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    import platform

    import numpy as np
    import torch

    from cpc_speech import __version__
    from cpc_speech.config import preset
    from cpc_speech.model.cpc import CPCModel

    model = CPCModel(preset(args.preset))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"cpc-speech {__version__}  python {platform.python_version()}  torch {torch.__version__}  numpy {np.__version__}")
    print(f"device: {'cuda (' + torch.cuda.get_device_name(0) + ')' if torch.cuda.is_available() else 'cpu'}; torch threads {torch.get_num_threads()}")
    from cpc_speech.engine.precision import resolve

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"precision auto (train.amp, extraction) on this {device}: {resolve('auto', device).describe()}")
    enc = model.encoder
    print(f"preset {args.preset}: {n_params / 1e6:.2f} M parameters; encoder downsampling {enc.downsampling} samples, receptive field {enc.receptive_field} samples")
    print(f"20480 samples -> {enc.num_frames(20480)} frames")
    return 0
