"""CPU fast paths of the model, numerically equal to the plain torch layers they replace.

The model reaches them only through the names below (tests/test_kernels.py holds the two sides to
each other; the float64 tests of each kernel are in tests/test_strided_conv.py and test_gru.py):

* :class:`StridedConv1d`: the encoder's convolution, an ``nn.Conv1d`` twin in (batch, frames,
  channels) layout computed as one large matrix product (:mod:`~cpc_speech.kernels.strided_conv`);
* :func:`fused_encoder`: the encoder's blocks with each ReLU fused into the next convolution's
  padding (:mod:`~cpc_speech.kernels.fused_encoder`);
* :func:`cpu_recurrent`: GRU / LSTM context networks on CPU, with a hand-written backward through
  time for training a GRU (:mod:`~cpc_speech.kernels.gru`);
* :class:`single_thread`: one intra-op thread for sequential steps (:mod:`~cpc_speech.kernels.threads`);
* :func:`enabled` / :func:`disabled`: the switch; with the kernels off the model runs plain torch.
"""

from cpc_speech.kernels.switch import disabled, enabled
from cpc_speech.kernels.strided_conv import StridedConv1d
from cpc_speech.kernels.fused_encoder import fused_encoder
from cpc_speech.kernels.gru import cpu_recurrent
from cpc_speech.kernels.threads import single_thread

__all__ = ["StridedConv1d", "cpu_recurrent", "disabled", "enabled", "fused_encoder", "single_thread"]
