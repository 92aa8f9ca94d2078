"""Which layer of a CPC model to read: layer names, their dimensions and the output of one layer of
the context network.

Names:

* ``"encoder"``: z_t, the encoder's frames (dim = encoder channels);
* ``"context"``: c_t, the context network's output (dim = context hidden size);
* ``"context.N"``: the output of layer N (0-based) of a multi-layer context network (GRU/LSTM layer
  N, or Transformer block N); ``context.<last>`` is ``"context"`` (for the Transformer: with its final
  LayerNorm, which the inner blocks do not have);
* ``"encoder+context"`` / ``"encoder+context.N"``: z_t and that context layer concatenated.

All layers stream exactly: the state of a partial context run holds the states of layers 0..N.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Tuple

import torch
from torch import nn

from cpc_speech.kernels import single_thread

LAYER_HELP = "encoder, context, context.N (layer N of a multi-layer context), encoder+context or encoder+context.N"
_PATTERN = re.compile(r"^(encoder\+)?context(?:\.(\d+))?$")


def parse_layer(layer: str) -> Tuple[bool, Optional[int]]:
    """(with the encoder frames, context layer index or None; -1 = the context output).
    ``ValueError`` naming the accepted forms for anything else."""
    if layer == "encoder":
        return True, None
    m = _PATTERN.match(layer) if isinstance(layer, str) else None
    if not m:
        raise ValueError(f"layer must be {LAYER_HELP}; got {layer!r}")
    return bool(m.group(1)), (-1 if m.group(2) is None else int(m.group(2)))


def check_layer(layer: str, cfg: Any = None) -> str:
    """``layer`` if it is a valid name (and, given the model config ``cfg``, a layer it has)."""
    _, index = parse_layer(layer)
    if cfg is not None and index is not None and index >= cfg.context.layers:
        raise ValueError(f"layer {layer!r}: the context network has {cfg.context.layers} layer(s) "
                         f"(context.0 .. context.{cfg.context.layers - 1})")
    return layer


def layer_dim(cfg: Any, layer: str) -> int:
    """Feature dimension of ``layer`` for a model config."""
    with_z, index = parse_layer(layer)
    return (cfg.encoder.channels if with_z else 0) + (0 if index is None else cfg.context.hidden)


def _single_rnn_layer(rnn: nn.RNNBase, n: int) -> nn.RNNBase:
    """A one-layer GRU/LSTM sharing the parameters of layer ``n`` of ``rnn``."""
    in_dim = rnn.input_size if n == 0 else rnn.hidden_size
    single = type(rnn)(in_dim, rnn.hidden_size, num_layers=1, batch_first=True, device="meta")
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        setattr(single, f"{name}_l0", getattr(rnn, f"{name}_l{n}"))
    return single.train(rnn.training)


def context_upto(context: nn.Module, z: torch.Tensor, state: Any, index: int) -> Tuple[torch.Tensor, Any]:
    """Output of context layer ``index`` (-1 or the last: the full context network) for encoder
    frames z (batch, frames, enc_dim), and the streaming state of layers 0..index."""
    from cpc_speech.model.context import RecurrentContext, TransformerContext

    layers = context.rnn.num_layers if isinstance(context, RecurrentContext) else len(context.blocks)
    if index < 0 or index == layers - 1:
        return context(z, state)
    if isinstance(context, RecurrentContext):
        rnn, lstm = context.rnn, isinstance(context.rnn, nn.LSTM)
        x, states = z, []
        with single_thread(not z.is_cuda):
            for n in range(index + 1):
                h = None
                if state is not None:
                    h = (state[0][n:n + 1], state[1][n:n + 1]) if lstm else state[n:n + 1]
                x, h = _single_rnn_layer(rnn, n)(x, h)
                states.append(h)
                if n < index and rnn.dropout > 0:
                    x = nn.functional.dropout(x, rnn.dropout, rnn.training)
        if lstm:
            return x, (torch.cat([h for h, _ in states]), torch.cat([c for _, c in states]))
        return x, torch.cat(states)
    if isinstance(context, TransformerContext):
        return context(z, state, blocks=index + 1)
    raise ValueError(f"cannot read single layers of a {type(context).__name__}")
