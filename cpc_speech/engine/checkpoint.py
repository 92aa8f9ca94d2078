"""Checkpoints: atomic, versioned, loadable without unpickling arbitrary objects.

A checkpoint file is a ``torch.save`` of a dict holding only tensors and plain Python values
(``format_version``, ``config`` as a plain dict, ``model`` state dict, and for training
``optimizer``, ``scheduler``, ``rng`` states, ``step``, ``epoch``...). It is read with
``torch.load(weights_only=True)``. Fine-tuning checkpoints share the format and carry
``kind: cpc_speech.finetune`` (head, backbone and training state instead of ``model``). A pretraining run folder holds
``config.yaml``, ``checkpoints/step-*.pt``, ``checkpoints/last.pt`` (copy of the newest) and
``checkpoints/best.pt`` (:mod:`cpc_speech.engine.run_dir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from cpc_speech.atomic import atomic_write_bytes
from cpc_speech.config import CPCConfig, PretrainConfig, config_from_dict
from cpc_speech.settings import to_dict

FORMAT_VERSION = 1
FINETUNE_KIND = "cpc_speech.finetune"  # ``kind`` of fine-tuning checkpoints (head, backbone, training state)
KINDS = {FINETUNE_KIND: "fine-tuning"}  # readable names for error messages
PathLike = Union[str, Path]


class CheckpointError(ValueError):
    """A missing, corrupt or incompatible checkpoint; the message names the file."""


def atomic_save(obj: Dict[str, Any], path: PathLike) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename: a crash never leaves a
    half-written checkpoint under the final name. The bytes are serialised in memory first, so a
    full disk is an ``OSError`` (ENOSPC) naming ``path`` rather than a torch-internal message, and
    the temporary file is removed."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getbuffer(), fsync=True)


def checkpoint_state(model: torch.nn.Module, config: Any, **extra: Any) -> Dict[str, Any]:
    """The checkpoint dict of model weights (on the CPU) + config (a dataclass) + ``extra``
    plain values/tensors."""
    state = {
        "format_version": FORMAT_VERSION,
        "config": to_dict(config),
        "config_type": type(config).__name__,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    state.update(extra)
    return state


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-1 of a module's state dict (names, dtypes, shapes and bytes): the same weights give the
    same digest whatever file or device they came from."""
    h = hashlib.sha1()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: PathLike, model: torch.nn.Module, config: Any, **extra: Any) -> Path:
    """Save model weights + config (a dataclass) + ``extra`` plain values/tensors."""
    return atomic_save(checkpoint_state(model, config, **extra), path)


def _torch_load(path: Path, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with a one-line error naming the file."""
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes): it was not written completely")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except OSError as exc:
        raise exc if exc.filename else OSError(exc.errno, exc.strerror, str(path)) from None
    except Exception as exc:
        raise CheckpointError(f"{path}: {load_failure(exc)}") from None


def _checked_state(path: Path, state: Any, kind: Optional[str] = None) -> Dict[str, Any]:
    if kind is not None:
        if not isinstance(state, dict) or "format_version" not in state or state.get("kind") != kind:
            raise CheckpointError(f"{path}: not a cpc_speech {KINDS.get(kind, kind)} checkpoint")
    elif not isinstance(state, dict) or "format_version" not in state or "model" not in state:
        raise CheckpointError(f"{path}: not a cpc_speech checkpoint (no format_version/model)")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {state['format_version']} is newer than this cpc_speech understands ({FORMAT_VERSION}); upgrade cpc_speech"
        )
    return state


def read_checkpoint(path: PathLike, map_location: Any = "cpu", kind: Optional[str] = None) -> Dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``) and check its format version;
    ``kind``: the checkpoint must carry this ``kind`` (e.g. :data:`FINETUNE_KIND`) instead of a
    ``model`` state dict."""
    path = Path(path)
    return _checked_state(path, _torch_load(path, map_location), kind)


def load_failure(exc: Exception) -> str:
    """A one-line reason for a failed ``torch.load`` (torch's advice to load unsafely is left out)."""
    text = str(exc)
    unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsafe:
        return (f"refused: the file holds Python objects that are not plain tensors or values ({unsafe.group(1)}); "
                f"cpc_speech never loads those")
    after = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else text
    lines = [ln.strip() for ln in after.splitlines() if ln.strip() and "weights_only" not in ln]
    detail = lines[0].split(". ")[0][:160] if lines else type(exc).__name__
    if isinstance(exc, KeyError):
        detail = f"unexpected byte {detail}"
    return f"not a readable cpc_speech checkpoint: not a PyTorch file, or truncated or corrupt ({detail})"


def _cpc_audio_latest(folder: Path) -> Optional[Path]:
    """The highest-numbered ``checkpoint_<N>.pt`` of a CPC_audio training folder, if any."""
    found = [(int(p.stem[len("checkpoint_"):]), p) for p in folder.glob("checkpoint_*.pt") if p.stem[len("checkpoint_"):].isdigit()]
    return max(found)[1] if found else None


def resolve_checkpoint(path: PathLike, which: str = "best") -> Path:
    """A checkpoint file, a run folder (its ``best.pt``, else ``last.pt``), a model bundle folder
    (its ``model.safetensors``) or a CPC_audio training folder (its last ``checkpoint_<N>.pt``)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for name in ([which] if which != "best" else []) + ["best", "last"]:
            candidate = path / "checkpoints" / f"{name}.pt"
            if candidate.is_file():
                return candidate
        from cpc_speech.bundle import WEIGHTS_NAME, is_bundle

        if is_bundle(path):
            return path / WEIGHTS_NAME
        latest = _cpc_audio_latest(path)
        if latest is not None:
            return latest
        raise CheckpointError(f"{path}: run folder has no checkpoints/best.pt or checkpoints/last.pt")
    raise CheckpointError(f"no checkpoint file or run folder at {path}")


def model_config_from_state(state: Dict[str, Any], path: Optional[PathLike] = None) -> CPCConfig:
    """The model config saved in a checkpoint, validated; errors name ``path``."""
    cfg = state.get("config")
    where = f"{path} config" if path else "checkpoint config"
    try:
        if not isinstance(cfg, dict):
            raise ValueError("missing or not a mapping")
        if state.get("config_type") == "PretrainConfig" or "model" in cfg:
            return config_from_dict(PretrainConfig, upgrade_saved_config(cfg), where=where).model
        return config_from_dict(CPCConfig, cfg, where=where)
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}" if not str(exc).startswith(where) else str(exc)) from None


def upgrade_saved_config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Saved configs of older versions: ``loss.temperature: 0`` meant the default (now ``null``)."""
    loss = cfg.get("loss")
    if isinstance(loss, dict) and loss.get("temperature") in (0, 0.0):
        cfg = {**cfg, "loss": {**loss, "temperature": None}}
    return cfg


def load_model(path: PathLike, device: Optional[Union[str, torch.device]] = None, which: str = "best"):
    """Load an eval-mode :class:`CPCModel` from a checkpoint file, a run folder, a model bundle
    (:mod:`cpc_speech.bundle`) or a CPC_audio checkpoint (:mod:`cpc_speech.cpc_audio`); the format
    is detected from the contents."""
    from cpc_speech.model.cpc import CPCModel

    ckpt = resolve_checkpoint(path, which)
    if ckpt.suffix == ".safetensors":
        from cpc_speech.bundle import load_bundle

        return load_bundle(ckpt.parent, device=device)
    obj = _torch_load(ckpt)
    from cpc_speech.cpc_audio import is_cpc_audio_checkpoint, load_cpc_audio

    if is_cpc_audio_checkpoint(obj):
        return load_cpc_audio(ckpt, obj, device=device)
    state = _checked_state(ckpt, obj)
    model = CPCModel(model_config_from_state(state, ckpt))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt}: weights do not fit the saved config ({str(exc).splitlines()[0]})") from None
    model.checkpoint_path = str(ckpt)
    if isinstance(state.get("imported_from"), dict):  # written by cpc-speech import
        model.import_info = state["imported_from"]
    return model.to(device or "cpu").eval()


def update_link(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` atomically (hard link when possible)."""
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OSError(exc.errno, exc.strerror, str(dst)) from None
