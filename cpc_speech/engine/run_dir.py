"""The run folder of a training run, shared by pretraining and fine-tuning.

What a run folder holds is decided by its trainer (pretraining: ``config.yaml``,
``manifests.json``, ``log.jsonl``, ``checkpoints/``, ``tensorboard/``; fine-tuning:
``finetune_config.yaml``, ``log.jsonl``, ``tensorboard/``, ``<condition>/{last,best}.pt``, ``result.json``); how it is written is
decided here, once:

* one owner at a time (:mod:`cpc_speech.runlock`), and temporaries of a killed writer removed;
* settings, JSON records and checkpoints written atomically (nothing half-written under a final name);
* one resume rule: a run resumes only with the settings it was started with, except the keys its
  trainer declares resumable (:func:`check_resumable`);
* ``last.pt`` / ``best.pt`` slots, with numbered ``step-<N>.pt`` files kept in rotation
  (:class:`CheckpointSlots`);
* ``log.jsonl``: one JSON object per event, mirrored to TensorBoard when it is installed.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Type, Union

from cpc_speech.atomic import atomic_write_text, remove_stale_temporaries
from cpc_speech.settings import save_config
from cpc_speech.engine.checkpoint import atomic_save, read_checkpoint, update_link
from cpc_speech.runlock import hold_output

PathLike = Union[str, Path]


def flatten(settings: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested sections as dotted keys: ``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``."""
    out: Dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_settings(saved: Mapping[str, Any], now: Mapping[str, Any], resumable: Iterable[str]) -> List[str]:
    """The dotted keys whose values differ between the saved and the current settings (nested
    mappings, see :func:`flatten`), leaving out the ``resumable`` keys; sorted."""
    old, new, free = flatten(saved), flatten(now), set(resumable)
    return sorted(k for k in set(old) | set(new) if k not in free and old.get(k) != new.get(k))


def check_resumable(saved: Mapping[str, Any], now: Mapping[str, Any], resumable: Iterable[str], where: PathLike,
                    advice: str, error: Type[Exception] = ValueError) -> None:
    """Raise ``error`` naming ``where`` and every changed key (old -> new value) when the
    settings differ in a key that is not ``resumable``; ``advice`` ends the message."""
    changed = changed_settings(saved, now, resumable)
    if changed:
        old, new = flatten(saved), flatten(now)
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise error(f"{where} holds a run with a different config ({detail}); {advice}")


# log fields mirrored to TensorBoard: pretraining's loss, accuracy and rate, fine-tuning's curves
TENSORBOARD_SCALARS = ("loss", "accuracy_mean", "lr", "train_loss", "dev_loss", "dev_per")


class CheckpointSlots:
    """The checkpoints of one folder: ``last.pt`` (the newest state), ``best.pt`` (the best
    weights) and, for runs that number them, ``step-<N>.pt`` files of which the newest few are kept
    (``last.pt`` and ``best.pt`` are then hard links, or copies, of one of those)."""

    def __init__(self, folder: PathLike):
        self.folder = Path(folder)
        self.last = self.folder / "last.pt"
        self.best = self.folder / "best.pt"

    def save_step(self, step: int, state: Dict[str, Any], keep_last: int, is_best: bool = False) -> Path:
        """Write ``step-<N>.pt``, point ``last.pt`` (and when ``is_best`` ``best.pt``) at it, and
        delete all but the ``keep_last`` newest numbered files (at least one is kept)."""
        path = atomic_save(state, self.folder / f"step-{step:07d}.pt")
        update_link(path, self.last)
        if is_best:
            update_link(path, self.best)
        steps = sorted(self.folder.glob("step-*.pt"))
        keep = set(steps[-max(1, keep_last):])
        for old in steps:
            if old not in keep:
                old.unlink(missing_ok=True)
        return path

    def save_last(self, state: Dict[str, Any]) -> Path:
        return atomic_save(state, self.last)

    def save_best(self, state: Dict[str, Any]) -> Path:
        return atomic_save(state, self.best)

    def best_from_last(self) -> None:
        """Without any validation the final model is the best one known: ``best.pt`` = ``last.pt``
        (when there is no ``best.pt`` yet)."""
        if not self.best.exists() and self.last.exists():
            update_link(self.last, self.best)

    def read_last(self, kind: Optional[str] = None) -> Dict[str, Any]:
        return read_checkpoint(self.last, kind=kind)

    def read_best(self, kind: Optional[str] = None) -> Dict[str, Any]:
        return read_checkpoint(self.best, kind=kind)


class RunDir:
    """One run folder. ``is_main``: this process writes it (rank 0 of a DDP run); the other ranks
    get no-op writes, so that trainers call these methods on every rank alike."""

    def __init__(self, path: PathLike, is_main: bool = True):
        self.path = Path(path)
        self.is_main = is_main
        self._tensorboard: Any = None  # None: not tried yet; False: not installed

    def lock(self, command: str):
        """Hold the folder's lock (main process only) while the block runs."""
        return hold_output(self.path, command) if self.is_main else contextlib.nullcontext()

    def remove_temporaries(self, *subfolders: PathLike) -> None:
        """Delete temporary files a killed writer left in the folder and in ``subfolders`` (call
        only while holding the lock)."""
        if self.is_main:
            for folder in (self.path, *(self.path / s for s in subfolders)):
                remove_stale_temporaries(folder)

    def slots(self, subfolder: PathLike) -> CheckpointSlots:
        return CheckpointSlots(self.path / subfolder)

    def write_config(self, cfg: Any, name: str) -> None:
        """Save a config dataclass as ``name`` (YAML or JSON by suffix), atomically."""
        if self.is_main:
            self.path.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.path / name)

    def write_json(self, name: PathLike, record: Any) -> None:
        """Write ``record`` as indented JSON to ``name`` (relative to the folder), atomically."""
        if self.is_main:
            atomic_write_text(self.path / name, json.dumps(record, indent=2))

    def read_json(self, name: PathLike) -> Optional[Any]:
        """The JSON record ``name``, or None when it is missing or unreadable."""
        try:
            return json.loads((self.path / name).read_text())
        except (OSError, ValueError):
            return None

    def read_log(self) -> List[Dict[str, Any]]:
        """The records of ``log.jsonl`` in order (none when it is missing); a torn last line (a
        writer killed mid-append) is left out."""
        try:
            lines = (self.path / "log.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def drop_log_records(self, unwanted: Callable[[Dict[str, Any]], bool]) -> int:
        """Rewrite ``log.jsonl`` (atomically) without the records for which ``unwanted`` is true,
        e.g. the epochs a resumed run will repeat; returns how many were dropped."""
        if not self.is_main:
            return 0
        records = self.read_log()
        kept = [r for r in records if not unwanted(r)]
        if len(kept) != len(records):
            atomic_write_text(self.path / "log.jsonl", "".join(json.dumps(r) + "\n" for r in kept))
        return len(records) - len(kept)

    def log(self, **fields: Any) -> None:
        """Append one event (with its ``time``) to ``log.jsonl``; the numbers named in
        :data:`TENSORBOARD_SCALARS` also go to TensorBoard as ``<split>/<key>`` at ``step``."""
        if not self.is_main:
            return
        fields = {"time": round(time.time(), 3), **fields}
        path = self.path / "log.jsonl"
        try:
            with open(path, "a") as f:
                f.write(json.dumps(fields) + "\n")
        except OSError as exc:  # e.g. a full disk: name the file
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        if self._tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tensorboard = SummaryWriter(str(self.path / "tensorboard"))
            except Exception:
                self._tensorboard = False
        if self._tensorboard:
            split = fields.get("split", "train")
            for key in TENSORBOARD_SCALARS:
                if isinstance(fields.get(key), (int, float)):
                    self._tensorboard.add_scalar(f"{split}/{key}", fields[key], fields["step"])
