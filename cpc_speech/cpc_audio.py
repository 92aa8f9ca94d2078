"""Import facebookresearch/CPC_audio checkpoints as cpc_speech models.

Two file layouts are read (``torch.load(weights_only=True)``, CPU; they hold only dicts, tensors and
plain values):

* a training checkpoint ``checkpoint_<N>.pt``: ``{"gEncoder": state, "cpcCriterion": state,
  "optimizer": ..., "best": state}``, where ``gEncoder`` is the state dict of the *whole* feature
  model (``gEncoder.conv{0..4}.*``, ``gEncoder.batchNorm{0..4}.*``, ``gAR.baseNet.*``), with the
  architecture in ``checkpoint_args.json`` beside it when the training code wrote one;
* the hub repackaging ``{"config": args, "weights": state}``.

Without the arguments file the architecture is inferred from the tensor shapes: encoder width and
kernels from the ``conv`` weights; the norm from the ``batchNorm`` tensors ((1, C, 1) weights:
channel norm; running statistics: batch norm; (C,) weights only: instance norm; none: identity);
LSTM or GRU from the rows of ``weight_ih`` (4 or 3 times the width of ``weight_hh``), layers from
how many there are. When the arguments are present they must agree with the shapes.

Mapping is strict: every tensor of the feature model must be used and every tensor of ours must
be filled (CPC_audio's own ``loadModel`` uses ``strict=False``, so a wrong architecture loads
silently there); the error names the key. Numerics:

* CPC_audio's channel norm divides by the *unbiased* variance over channels; it is folded into
  our biased ``layer_norm`` form exactly (weight times sqrt((C-1)/C), eps times (C-1)/C, see
  :class:`cpc_speech.model.encoder.ChannelNorm`);
* batch norm running statistics, LSTM/GRU weights and both bias vectors map one to one (the GRU's
  ``bias_hh`` enters inside the reset gate and is not interchangeable with ``bias_ih``);
* linear prediction heads (``rnnMode linear``) are imported; other CPC_audio predictors (its
  Transformer, LSTM, convolutional ones) have no cpc_speech twin, so the imported model gets
  fresh linear heads (unused for features) and ``import_info["heads_imported"]`` is False.

Frame alignment: the encoder is the same (kernels 10,8,4,4,4, strides 5,4,2,2,2, paddings
3,2,1,1,1), so n samples give floor((n + 1) / 160) frames in both (for n >= 465). CPC_audio's
``buildFeature`` runs the model on chunks of ``maxSizeSeq`` (64000) samples and restarts the
recurrent state at every chunk (unless trained with ``samplingType sequential``, whose LSTM keeps
its state across calls); our extraction is one exact pass, equal to ``buildFeature`` with
``maxSizeSeq`` at least the input length.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Tuple, Union

import torch

from cpc_speech.engine.checkpoint import CheckpointError, save_checkpoint
from cpc_speech.config import CPCConfig, ContextConfig, EncoderConfig, PredictorConfig
from cpc_speech.runlock import locks_output
from cpc_speech.types import PathLike

ARGS_NAME = "checkpoint_args.json"
ENCODER_KERNELS = (10, 8, 4, 4, 4)
ENCODER_STRIDES = (5, 4, 2, 2, 2)
ENCODER_PADDINGS = (3, 2, 1, 1, 1)
CPC_AUDIO_EPS = 1e-5  # ChannelNorm and nn.BatchNorm1d / InstanceNorm1d defaults there
_NORM_MODES = {"layerNorm": "channel", "batchNorm": "batch", "instanceNorm": "instance", "ID": "none"}
_GATES = {4: "lstm", 3: "gru", 1: "rnn"}


def is_cpc_audio_checkpoint(obj: Any) -> bool:
    """Whether a loaded checkpoint dict has one of the CPC_audio layouts (see the module doc)."""
    if not isinstance(obj, dict) or "format_version" in obj:
        return False
    return isinstance(obj.get("gEncoder"), dict) or (isinstance(obj.get("weights"), dict) and isinstance(obj.get("config"), dict))


def _strip_module_prefix(state: Dict[str, Any]) -> Dict[str, Any]:
    """Keys saved from a ``DataParallel`` wrapper start with ``module.``."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


class CPCAudioCheckpoint(NamedTuple):
    state: Dict[str, torch.Tensor]  # the feature model (gEncoder.*, gAR.*)
    args: Optional[Dict[str, Any]]  # training arguments, if known
    criterion: Optional[Dict[str, torch.Tensor]]  # cpcCriterion state, if present
    args_source: str  # where the architecture comes from


def read_cpc_audio(path: PathLike, obj: Optional[Dict[str, Any]] = None, state: str = "last") -> CPCAudioCheckpoint:
    """The parts of a CPC_audio checkpoint file. ``obj``: the already loaded dict, if any.
    ``state``: ``"last"`` (the ``gEncoder`` entry: the model when the file was written) or
    ``"best"`` (the ``best`` entry of a training checkpoint: its best validation accuracy so far)."""
    if state not in ("last", "best"):
        raise CheckpointError(f"state must be 'last' or 'best', got {state!r}")
    path = Path(path)
    if obj is None:
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0][:200]})") from None
    if not is_cpc_audio_checkpoint(obj):
        raise CheckpointError(f"{path}: not a CPC_audio checkpoint (no 'gEncoder' state dict, nor 'config' + 'weights')")
    if isinstance(obj.get("gEncoder"), dict):
        if state == "best" and not isinstance(obj.get("best"), dict):
            raise CheckpointError(f"{path}: no 'best' model state in this checkpoint")
        weights, criterion = obj["best" if state == "best" else "gEncoder"], obj.get("cpcCriterion")
        if state == "best":
            criterion = None  # the criterion was saved with the last state, not the best one
        args, source = None, "inferred from tensor shapes"
        args_path = path.parent / ARGS_NAME
        if args_path.is_file():
            source = str(args_path)
            try:
                args = json.loads(args_path.read_text())
            except ValueError as exc:
                raise CheckpointError(f"{args_path}: not valid JSON ({exc})") from None
            if not isinstance(args, dict):
                raise CheckpointError(f"{args_path}: expected a JSON object of training arguments")
    else:
        if state == "best":
            raise CheckpointError(f"{path}: the hub {{config, weights}} file holds one model state (no 'best')")
        weights, args, criterion, source = obj["weights"], obj["config"], None, "hub config"
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: entry {name!r} of the model state is not a tensor")
    weights = {k: v.float() if v.is_floating_point() else v for k, v in _strip_module_prefix(weights).items()}
    if isinstance(criterion, dict):
        criterion = _strip_module_prefix(criterion)
    else:
        criterion = None
    return CPCAudioCheckpoint(weights, args, criterion, source)


def _shape(state: Dict[str, torch.Tensor], key: str, where: str) -> Tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{where}: missing key {key!r}")
    return tuple(state[key].shape)


def infer_config(state: Dict[str, torch.Tensor], args: Optional[Dict[str, Any]] = None, where: str = "checkpoint",
                 criterion: Optional[Dict[str, torch.Tensor]] = None) -> CPCConfig:
    """The cpc_speech :class:`CPCConfig` of a CPC_audio feature model state (see the module doc);
    ``args`` (checkpoint_args.json or the hub ``config``) must agree with the shapes."""
    args = dict(args or {})
    if args.get("encoder_type", "cpc") not in (None, "cpc"):
        raise CheckpointError(f"{where}: encoder_type {args['encoder_type']!r} is not supported (only the CPC convolutional encoder)")
    if args.get("cpc_mode") not in (None, "none"):
        raise CheckpointError(f"{where}: cpc_mode {args['cpc_mode']!r} is not supported (its context network reads time backwards)")
    if any(k.startswith(("models.", "gEncoder.MFCC", "gEncoder.conv.")) for k in state):
        raise CheckpointError(f"{where}: a concatenated or non-convolutional CPC_audio model is not supported")

    # encoder: conv0..conv4
    convs = sorted({int(m.group(1)) for k in state if (m := re.match(r"gEncoder\.conv(\d+)\.weight$", k))})
    if convs != list(range(len(ENCODER_KERNELS))):
        raise CheckpointError(f"{where}: expected encoder weights gEncoder.conv0..conv4.weight, found conv layers {convs}")
    channels = _shape(state, "gEncoder.conv0.weight", where)[0]
    kernels = []
    for i in convs:
        shape = _shape(state, f"gEncoder.conv{i}.weight", where)
        expect_in = 1 if i == 0 else channels
        if len(shape) != 3 or shape[0] != channels or shape[1] != expect_in:
            raise CheckpointError(f"{where}: gEncoder.conv{i}.weight has shape {list(shape)}, expected [{channels}, {expect_in}, kernel]")
        kernels.append(shape[2])
    if tuple(kernels) != ENCODER_KERNELS:
        raise CheckpointError(f"{where}: encoder kernels {kernels} differ from CPC_audio's {list(ENCODER_KERNELS)}")
    if "hiddenEncoder" in args and int(args["hiddenEncoder"]) != channels:
        raise CheckpointError(f"{where}: hiddenEncoder {args['hiddenEncoder']} in the arguments, but the weights have {channels} channels")

    # norm kind from the batchNorm0 tensors
    norm_keys = {k.split(".", 2)[2] for k in state if k.startswith("gEncoder.batchNorm0.")}
    if not norm_keys:
        norm = "none"
    elif "running_mean" in norm_keys:
        norm = "batch"
    elif len(_shape(state, "gEncoder.batchNorm0.weight", where)) == 3:
        norm = "channel"
    else:
        norm = "instance"
    if "normMode" in args:
        if args["normMode"] not in _NORM_MODES:
            raise CheckpointError(f"{where}: unknown normMode {args['normMode']!r} (one of {sorted(_NORM_MODES)})")
        if _NORM_MODES[args["normMode"]] != norm:
            raise CheckpointError(f"{where}: normMode {args['normMode']!r} in the arguments, but the weights hold a {norm} norm")
    eps = CPC_AUDIO_EPS * (channels - 1) / channels if norm == "channel" else CPC_AUDIO_EPS

    # context network: gAR.baseNet.{weight_ih,weight_hh,bias_ih,bias_hh}_l{L}
    ar_keys = [k for k in state if k.startswith("gAR.")]
    if not ar_keys:
        raise CheckpointError(f"{where}: no context network weights (gAR.*): arMode no_ar is not supported")
    if not all(k.startswith("gAR.baseNet.") for k in ar_keys):
        raise CheckpointError(f"{where}: context network {sorted(ar_keys)[0]!r}: only CPC_audio's LSTM/GRU context (gAR.baseNet.*) is supported, not its Transformer")
    layers = sorted({int(m.group(1)) for k in ar_keys if (m := re.match(r"gAR\.baseNet\.weight_ih_l(\d+)$", k))})
    if not layers or layers != list(range(len(layers))):
        raise CheckpointError(f"{where}: expected gAR.baseNet.weight_ih_l0.. for consecutive layers, found layers {layers}")
    hh = _shape(state, "gAR.baseNet.weight_hh_l0", where)
    hidden = hh[1]
    gates = hh[0] // hidden if hidden else 0
    kind = _GATES.get(gates) if hh[0] == gates * hidden else None
    if kind is None or kind == "rnn":
        raise CheckpointError(f"{where}: gAR.baseNet.weight_hh_l0 has shape {list(hh)}: only LSTM (4 x hidden rows) and GRU (3 x hidden rows) context networks are supported")
    ih = _shape(state, "gAR.baseNet.weight_ih_l0", where)
    if ih != (gates * hidden, channels):
        raise CheckpointError(f"{where}: gAR.baseNet.weight_ih_l0 has shape {list(ih)}, expected [{gates * hidden}, {channels}]")
    if "arMode" in args and str(args["arMode"]).lower() != kind:
        raise CheckpointError(f"{where}: arMode {args['arMode']!r} in the arguments, but the weights hold a {kind.upper()}")
    if "hiddenGar" in args and int(args["hiddenGar"]) != hidden:
        raise CheckpointError(f"{where}: hiddenGar {args['hiddenGar']} in the arguments, but the weights have {hidden} units")
    if "nLevelsGRU" in args and int(args["nLevelsGRU"]) != len(layers):
        raise CheckpointError(f"{where}: nLevelsGRU {args['nLevelsGRU']} in the arguments, but the weights have {len(layers)} layer(s)")

    steps = int(args.get("nPredicts", 12))
    linear = _linear_heads(criterion, channels, hidden)
    if linear is not None:
        steps = linear.shape[0] // channels
    return CPCConfig(
        encoder=EncoderConfig(channels=channels, kernels=ENCODER_KERNELS, strides=ENCODER_STRIDES, paddings=ENCODER_PADDINGS, norm=norm, norm_eps=eps),
        context=ContextConfig(kind=kind, hidden=hidden, layers=len(layers)),
        predictor=PredictorConfig(kind="linear", steps=steps),
    ).validate()


def _linear_heads(criterion: Optional[Dict[str, torch.Tensor]], channels: int, hidden: int) -> Optional[torch.Tensor]:
    """The stacked (K * enc_dim, hidden) weight of CPC_audio's linear predictors
    (``wPrediction.predictors.{k}.weight``), or None when its predictors are of another kind."""
    if not criterion:
        return None
    pred = {k: v for k, v in criterion.items() if k.startswith("wPrediction.predictors.")}
    steps = sorted({int(m.group(1)) for k in pred if (m := re.match(r"wPrediction\.predictors\.(\d+)\.weight$", k))})
    if not steps or steps != list(range(len(steps))) or len(pred) != len(steps):
        return None
    weights = [pred[f"wPrediction.predictors.{k}.weight"] for k in steps]
    if any(not isinstance(w, torch.Tensor) or tuple(w.shape) != (channels, hidden) for w in weights):
        return None
    return torch.cat([w.float() for w in weights], dim=0)


def convert_state(state: Dict[str, torch.Tensor], cfg: CPCConfig, reference: Dict[str, torch.Tensor], where: str = "checkpoint",
                  criterion: Optional[Dict[str, torch.Tensor]] = None) -> Tuple[Dict[str, torch.Tensor], bool]:
    """(our state dict, heads imported?) for a CPC_audio feature model ``state``. ``reference`` is
    the state dict of a freshly built model of ``cfg``: every one of its keys must be filled with a
    tensor of the same shape and every key of ``state`` used, else the error names the key."""
    out: Dict[str, torch.Tensor] = {}
    used = set()
    channels = cfg.encoder.channels

    def take(src: str, dst: str, value: Optional[torch.Tensor] = None) -> None:
        if src not in state:
            raise CheckpointError(f"{where}: missing key {src!r} (needed for {dst})")
        if dst not in reference:
            raise CheckpointError(f"{where}: key {src!r} has no place in the cpc_speech model")
        tensor = state[src] if value is None else value
        if tuple(tensor.shape) != tuple(reference[dst].shape):
            raise CheckpointError(f"{where}: {src} has shape {list(tensor.shape)}, expected {list(reference[dst].shape)}")
        out[dst] = tensor.to(reference[dst].dtype).clone()
        used.add(src)

    for i in range(len(cfg.encoder.kernels)):
        conv, norm = f"encoder.layers.{3 * i}", f"encoder.layers.{3 * i + 1}"
        take(f"gEncoder.conv{i}.weight", f"{conv}.weight")
        take(f"gEncoder.conv{i}.bias", f"{conv}.bias")
        src = f"gEncoder.batchNorm{i}"
        if cfg.encoder.norm == "channel":
            scale = math.sqrt((channels - 1) / channels)  # unbiased -> biased variance, exactly
            w = state.get(f"{src}.weight")
            take(f"{src}.weight", f"{norm}.weight", None if w is None else w * scale)
            take(f"{src}.bias", f"{norm}.bias")
        elif cfg.encoder.norm == "batch":
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                take(f"{src}.{name}", f"{norm}.{name}")
        elif cfg.encoder.norm == "instance":
            take(f"{src}.weight", f"{norm}.weight")
            take(f"{src}.bias", f"{norm}.bias")
    for layer in range(cfg.context.layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            take(f"gAR.baseNet.{name}_l{layer}", f"context.rnn.{name}_l{layer}")
    unexpected = sorted(set(state) - used)
    if unexpected:
        raise CheckpointError(f"{where}: unexpected key {unexpected[0]!r} in the model state" + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "") + "; the architecture does not match")
    heads = _linear_heads(criterion, channels, cfg.context.hidden)
    imported = heads is not None and tuple(heads.shape) == tuple(reference["heads.proj.weight"].shape)
    for key, value in reference.items():
        if key.startswith("heads."):
            out[key] = heads.clone() if imported and key == "heads.proj.weight" else value.clone()
    missing = sorted(set(reference) - set(out))
    if missing:
        raise CheckpointError(f"{where}: no CPC_audio tensor for {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return out, imported


def load_cpc_audio(path: PathLike, obj: Optional[Dict[str, Any]] = None, device: Optional[Union[str, torch.device]] = None,
                   state: str = "last", context_layers: Optional[int] = None):
    """An eval-mode :class:`~cpc_speech.model.cpc.CPCModel` with the weights of a CPC_audio
    checkpoint (``model.import_info`` says what was read). ``state``: see :func:`read_cpc_audio`;
    ``context_layers``: keep only that many recurrent layers (:func:`keep_context_layers`)."""
    from cpc_speech.model.cpc import CPCModel

    path = Path(path)
    ckpt = read_cpc_audio(path, obj, state)
    cfg = infer_config(ckpt.state, ckpt.args, str(path), ckpt.criterion)
    torch.manual_seed(0)  # fresh heads (when not imported) are the same on every import
    model = CPCModel(cfg)
    weights, heads = convert_state(ckpt.state, cfg, model.state_dict(), str(path), ckpt.criterion)
    model.load_state_dict(weights, strict=True)
    model.checkpoint_path = str(path)
    model.import_info = {
        "source": "cpc_audio",
        "file": str(path),
        "architecture": ckpt.args_source,
        "heads_imported": heads,
    }
    epoch = path.stem[len("checkpoint_"):] if path.stem.startswith("checkpoint_") else ""
    if epoch.isdigit():
        model.import_info["epoch"] = int(epoch)  # CPC_audio names checkpoints after the epoch
    if state == "best":
        model.import_info["state"] = "best"
    if context_layers is not None:
        info = model.import_info
        model = keep_context_layers(model, context_layers)
        model.import_info = dict(info, context_layers=f"first {context_layers} of {cfg.context.layers}", heads_imported=False)
    return model.to(device or "cpu").eval()


def keep_context_layers(model, layers: int):
    """A copy of a GRU/LSTM model keeping only its first ``layers`` recurrent layers, so that its
    context features are the outputs of layer ``layers`` (e.g. the 2nd LSTM layer of CPC-big used
    for ZeroSpeech 2021); the prediction heads are fresh (they were trained on the last layer)."""
    import copy

    from cpc_speech.model.cpc import CPCModel

    ctx = model.cfg.context
    if ctx.kind not in ("gru", "lstm"):
        raise CheckpointError(f"keeping context layers needs a GRU/LSTM context network, not {ctx.kind!r}")
    if not 1 <= layers <= ctx.layers:
        raise CheckpointError(f"context layers must be between 1 and {ctx.layers}, got {layers}")
    cfg = copy.deepcopy(model.cfg)
    cfg.context.layers = layers
    torch.manual_seed(0)
    small = CPCModel(cfg)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(("context.", "heads."))}
    for key, value in model.state_dict().items():
        m = re.match(r"context\.rnn\.\w+_l(\d+)$", key)
        if m and int(m.group(1)) < layers:
            state[key] = value
    state.update({k: v for k, v in small.state_dict().items() if k.startswith("heads.")})
    small.load_state_dict(state, strict=True)
    small.checkpoint_path = getattr(model, "checkpoint_path", None)
    return small.eval()


@locks_output("out_dir", "import")
def import_cpc_audio(path: PathLike, out_dir: PathLike, overwrite: bool = False, state: str = "last",
                     context_layers: Optional[int] = None) -> Path:
    """Write a cpc_speech run folder (``config.yaml``, ``checkpoints/best.pt`` and ``last.pt``) for a
    CPC_audio checkpoint; ``load_model(out_dir)`` then gives the same model."""
    from cpc_speech.engine.checkpoint import update_link
    from cpc_speech.config import PretrainConfig
    from cpc_speech.settings import save_config

    model = load_cpc_audio(path, state=state, context_layers=context_layers)
    out = Path(out_dir)
    best = out / "checkpoints" / "best.pt"
    if best.exists() and not overwrite:
        raise CheckpointError(f"{best} exists (use --overwrite to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    save_config(PretrainConfig(model=model.cfg), out / "config.yaml")
    save_checkpoint(best, model, model.cfg, imported_from=dict(model.import_info))
    update_link(best, out / "checkpoints" / "last.pt")
    return out


def describe(model) -> str:
    """One line about an imported model's architecture."""
    cfg = model.cfg
    info = getattr(model, "import_info", {})
    return (
        f"encoder {cfg.encoder.channels} channels, {cfg.encoder.norm} norm; {cfg.context.kind.upper()} "
        f"{cfg.context.hidden} x {cfg.context.layers} layer(s)"
        + (f" ({info['context_layers']} kept)" if info.get("context_layers") else "")
        + (" from the 'best' state" if info.get("state") == "best" else "")
        + f"; architecture {info.get('architecture', '?')}; "
        f"prediction heads {'imported' if info.get('heads_imported') else 'not imported (fresh linear heads)'}"
    )


__all__ = ["is_cpc_audio_checkpoint", "read_cpc_audio", "infer_config", "convert_state", "load_cpc_audio", "import_cpc_audio",
           "keep_context_layers", "describe"]
