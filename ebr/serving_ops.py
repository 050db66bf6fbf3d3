"""Ops the exported query encoder calls as single nodes; importing this module registers them.

training/model.py calls them while exporting (training/export.py), and ebr/query_encoder.py
imports this module before loading a program. nn.LSTM traced by torch.export unrolls into one set
of ops per time step, with the sequence length fixed at export: `ebr::lstm` keeps it one node
whose length stays dynamic, and the export takes well under a second instead of tens.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.library.custom_op("ebr::lstm", mutates_args=())
def lstm(x: Tensor, weights: list[Tensor], num_layers: int) -> Tensor:
    """Output sequence of a batch-first, unidirectional nn.LSTM with biases, from zero states;
    weights: its _flat_weights (w_ih, w_hh, b_ih, b_hh per layer)."""
    h0 = x.new_zeros(num_layers, x.shape[0], weights[1].shape[1])
    out, _, _ = torch._VF.lstm(x, (h0, h0), weights, True, num_layers, 0.0, False, False, True)
    return out


@lstm.register_fake
def _(x: Tensor, weights: list[Tensor], num_layers: int) -> Tensor:
    return x.new_empty(x.shape[0], x.shape[1], weights[1].shape[1])
