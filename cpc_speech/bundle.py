"""Model bundles: a folder that ships one trained model in a standard, code-free form.

Layout::

    DIR/config.json         {"format": "cpc_speech-bundle", "format_version": 1,
                             "model": CPCConfig as a dict, "cpc_speech_version": "...",
                             "source": {what it was exported from}}
    DIR/model.safetensors   the CPCModel state dict (float32 tensors; batch norm's step count int64)
    DIR/README.md           a generated model card: architecture, data, steps, probe results

``load_model(DIR)`` (:func:`cpc_speech.engine.checkpoint.load_model`) reads it; a bundle of a newer
format version, a config that does not validate or weights that do not fit it are refused with
the file named.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from cpc_speech.engine.checkpoint import CheckpointError
from cpc_speech.runlock import locks_output
from cpc_speech.types import PathLike

BUNDLE_FORMAT = "cpc_speech-bundle"
BUNDLE_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"


def is_bundle(folder: PathLike) -> bool:
    folder = Path(folder)
    return (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()


def _safetensors():
    try:
        import safetensors.torch
    except ImportError:
        raise RuntimeError("model bundles need safetensors: pip install safetensors") from None
    return safetensors.torch


def read_bundle_config(folder: PathLike) -> Dict[str, Any]:
    """The checked ``config.json`` of a bundle."""
    path = Path(folder) / CONFIG_NAME
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: not a model bundle (no {CONFIG_NAME})") from None
    except ValueError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(f"{path}: not a cpc_speech model bundle (format is not {BUNDLE_FORMAT!r})")
    version = info.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: format_version must be a positive integer, got {version!r}")
    if version > BUNDLE_VERSION:
        raise CheckpointError(f"{path}: bundle format {version} is newer than this cpc_speech understands ({BUNDLE_VERSION}); upgrade cpc_speech")
    if not isinstance(info.get("model"), dict):
        raise CheckpointError(f"{path}: no 'model' configuration")
    return info


def load_bundle(folder: PathLike, device: Optional[Union[str, torch.device]] = None):
    """An eval-mode :class:`~cpc_speech.model.cpc.CPCModel` from a bundle folder."""
    from cpc_speech.config import CPCConfig
    from cpc_speech.settings import from_dict
    from cpc_speech.model.cpc import CPCModel

    folder = Path(folder)
    info = read_bundle_config(folder)
    try:
        cfg = from_dict(CPCConfig, info["model"], where=f"{folder / CONFIG_NAME}: model").validate()
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    weights_path = folder / WEIGHTS_NAME
    try:
        state = _safetensors().load_file(str(weights_path), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({str(exc).splitlines()[0][:200]})") from None
    model = CPCModel(cfg)
    reference = model.state_dict()
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    if missing or unexpected:
        what = f"missing tensor {missing[0]!r}" if missing else f"unexpected tensor {unexpected[0]!r}"
        raise CheckpointError(f"{weights_path}: {what} for the model in {CONFIG_NAME}")
    for key, ref in reference.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(f"{weights_path}: {key} has shape {list(state[key].shape)}, {CONFIG_NAME} needs {list(ref.shape)}")
    model.load_state_dict(state, strict=True)
    model.checkpoint_path = str(weights_path)
    model.bundle_info = info
    return model.to(device or "cpu").eval()


# ------------------------------------------------------------------------------------- export


def _json_or_none(path: Path) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _run_summary(run: Optional[Path], ckpt_state: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Training facts for the model card: steps, data, probe results (from ``report.json`` when
    the run has one)."""
    out: Dict[str, Any] = {}
    if ckpt_state is not None:
        for key in ("step", "epoch"):
            if isinstance(ckpt_state.get(key), (int, float)):
                out[key] = ckpt_state[key]
        if isinstance(ckpt_state.get("imported_from"), dict):
            out["imported_from"] = {k: v for k, v in ckpt_state["imported_from"].items() if isinstance(v, (str, int, float, bool))}
    report = _json_or_none(run / "report.json") if run is not None else None
    if report:
        pre = report.get("pretraining") or {}
        out["steps"] = pre.get("steps")
        out["final_valid_loss"] = pre.get("final_valid_loss")
        out["data"] = report.get("data")
        for section in ("phone_probe", "speaker_probe", "speaker_probe_window"):
            sec = report.get(section) or {}
            accs = {name: v.get("accuracy") for name, v in sec.items() if isinstance(v, dict) and v.get("accuracy") is not None}
            if accs:
                out[section] = accs
        ft = report.get("finetune") or {}
        pers = {name: v.get("per_test", v.get("per_dev")) for name, v in ft.items() if isinstance(v, dict)}
        if pers:
            out["finetune_per"] = pers
    elif run is not None:
        manifests = _json_or_none(run / "manifests.json")
        if manifests:
            out["data"] = {k: {"manifest": v} for k, v in manifests.items() if isinstance(v, str)}
    return out


def model_card(cfg, summary: Dict[str, Any], name: str) -> str:
    """The generated README.md of a bundle."""
    e, c, p = cfg.encoder, cfg.context, cfg.predictor
    params = summary.get("parameters")
    lines = [
        f"# {name}",
        "",
        "A Contrastive Predictive Coding (CPC) speech representation model exported by cpc_speech.",
        "",
        "## Use",
        "",
        "```python",
        "import cpc_speech",
        "model = cpc_speech.load_model(\"PATH/TO/THIS/FOLDER\")",
        "feats = cpc_speech.extract_features(\"utt.flac\", model=model)  # (frames, "
        f"{c.hidden}) at 100 frames/s",
        "```",
        "",
        "## Architecture",
        "",
        f"- input: 16 kHz mono waveform; one frame per {_prod(e.strides)} samples",
        f"- encoder: {len(e.kernels)} strided convolutions (kernels {list(e.kernels)}, strides {list(e.strides)}), "
        f"{e.channels} channels, {e.norm} norm (eps {e.norm_eps:.6g})",
        f"- context: {c.kind.upper()} {c.hidden} units x {c.layers} layer(s)" + (f", window {c.window}" if c.kind == "transformer" else ""),
        f"- prediction heads: {p.kind}, {p.steps} steps",
    ]
    if params:
        lines.append(f"- parameters: {params:,}")
    lines += ["", "## Training", ""]
    imported = summary.get("imported_from")
    if imported:
        epoch = f", epoch {imported['epoch']}" if imported.get("epoch") is not None else ""
        heads = "" if imported.get("heads_imported", True) else "; prediction heads not imported (fresh, unused for features)"
        lines.append(f"- imported from a {imported.get('source', '?')} checkpoint ({Path(str(imported.get('file', '?'))).name}{epoch}); "
                     f"architecture: {imported.get('architecture', '?')}{heads}")
    steps = summary.get("steps", summary.get("step"))
    lines.append(f"- steps: {steps if steps is not None else 'unknown'}")
    data = summary.get("data") or {}
    for split, d in data.items():
        if isinstance(d, dict):
            extra = ", ".join(f"{k} {d[k]:.2f}" if isinstance(d[k], float) else f"{k} {d[k]}" for k in ("utterances", "hours", "speakers") if d.get(k) is not None)
            lines.append(f"- {split} data: {d.get('manifest', '?')}" + (f" ({extra})" if extra else ""))
    if not data:
        lines.append("- data: not recorded")
    results = [(s, summary[s]) for s in ("phone_probe", "speaker_probe", "speaker_probe_window") if s in summary]
    lines += ["", "## Results", ""]
    if results or summary.get("finetune_per"):
        lines += ["| evaluation | features | accuracy |", "|---|---|---|"]
        for section, accs in results:
            for feat, acc in accs.items():
                lines.append(f"| {section.replace('_', ' ')} | {feat} | {100 * acc:.1f} % |")
        for feat, per in (summary.get("finetune_per") or {}).items():
            if per is not None:
                lines.append(f"| fine-tuning PER | {feat} | {100 * per:.1f} % |")
    else:
        lines.append("No probe results were found (run `cpc-speech probe` and `cpc-speech report` on the run before exporting).")
    lines += ["", f"Files: `{CONFIG_NAME}` (format {BUNDLE_FORMAT} v{BUNDLE_VERSION}), `{WEIGHTS_NAME}`.", ""]
    return "\n".join(lines)


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


@locks_output("out_dir", "export", kind="beside")
def export_bundle(source: PathLike, out_dir: PathLike, name: Optional[str] = None, overwrite: bool = False) -> Path:
    """Write a bundle for a run folder, checkpoint file, CPC_audio checkpoint or bundle ``source``.

    The folder is built under a temporary name beside ``out_dir`` and renamed into place, so a
    failure never leaves a half-written bundle."""
    from cpc_speech import __version__
    from cpc_speech.settings import to_dict
    from cpc_speech.engine.checkpoint import load_model, read_checkpoint, resolve_checkpoint

    source = Path(source)
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out} exists (use --overwrite to replace it)")
    ckpt = resolve_checkpoint(source)
    model = load_model(source)
    ckpt_state = None
    if ckpt.suffix == ".pt":
        try:
            ckpt_state = read_checkpoint(ckpt)
        except CheckpointError:
            ckpt_state = None  # e.g. a CPC_audio file: described by model.import_info
    run = source if source.is_dir() else (ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None)
    summary = _run_summary(run, ckpt_state)
    if getattr(model, "import_info", None):
        summary["imported_from"] = {k: v for k, v in model.import_info.items() if isinstance(v, (str, int, float, bool))}
    summary["parameters"] = sum(p.numel() for p in model.parameters())
    info = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "cpc_speech_version": __version__,
        "model": to_dict(model.cfg),
        "source": {"path": str(source.resolve()), "checkpoint": str(ckpt.resolve()),
                   **{k: v for k, v in summary.items() if k in ("step", "steps", "imported_from")}},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        _safetensors().save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": BUNDLE_FORMAT, "format_version": str(BUNDLE_VERSION)})
        (tmp / CONFIG_NAME).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        (tmp / CARD_NAME).write_text(model_card(model.cfg, summary, name or (run.name if run else ckpt.stem)), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
