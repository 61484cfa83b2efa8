"""fastrnn: fast CPU recurrent networks (RNN, LSTM, GRU) under a NumPy API.

The kernels are C++ with SIMD (chosen at run time) and OpenMP; ``fastrnn.reference``
is a pure-NumPy implementation of the same math used as the test oracle.

Quick tour::

    import fastrnn as fr
    lstm = fr.LSTM(input_size=64, hidden_size=128, num_layers=2, batch_first=True, seed=0)
    y, (h, c) = lstm(x)                                 # inference
    y, state, tape = lstm.forward(x, training=True)     # training
    dx, dstate = lstm.backward(tape, dy)                # grads land in lstm.grads

Submodules: ``functional`` (stateless single-layer kernels), ``reference`` (NumPy oracle),
``ops`` (GEMM and activations), ``losses``, ``optim``, ``training``, ``diagnostics``,
``interop`` (Keras/ONNX weights), ``bench`` (the benchmark runner) and, with PyTorch
installed, ``fastrnn.torch`` (drop-in ``torch.nn`` modules; imported only on request).
"""

from __future__ import annotations

from fastrnn import (
    _core,
    diagnostics,
    functional,
    init,
    interop,
    losses,
    ops,
    optim,
    reference,
    training,
)
from fastrnn._runtime import (
    build_info,
    cache_info,
    empty_cache,
    get_isa,
    get_num_threads,
    set_cache_limit,
    set_isa,
    set_num_threads,
)
from fastrnn.cells import GRUCell, LSTMCell, RNNCell
from fastrnn.diagnostics import gradient_norms, plot_gradient_norms
from fastrnn.layers import GRU, LSTM, RNN, load_module
from fastrnn.losses import mask_from_lengths, mse, softmax_cross_entropy
from fastrnn.modules import Embedding, Linear, Recurrent, Sequential
from fastrnn.optim import SGD, Adam, clip_grad_norm, clip_grad_value
from fastrnn.seq2seq import Seq2Seq
from fastrnn.training import truncated_bptt

__version__: str = _core.build_info()["version"]

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "SGD",
    "Adam",
    "Embedding",
    "GRUCell",
    "LSTMCell",
    "Linear",
    "RNNCell",
    "Recurrent",
    "Seq2Seq",
    "Sequential",
    "__version__",
    "build_info",
    "cache_info",
    "clip_grad_norm",
    "clip_grad_value",
    "diagnostics",
    "empty_cache",
    "functional",
    "get_isa",
    "get_num_threads",
    "gradient_norms",
    "init",
    "interop",
    "load_module",
    "losses",
    "mask_from_lengths",
    "mse",
    "ops",
    "optim",
    "plot_gradient_norms",
    "reference",
    "set_cache_limit",
    "set_isa",
    "set_num_threads",
    "softmax_cross_entropy",
    "training",
    "truncated_bptt",
]
