"""FLOPs of one MGDSPR training example, to report training throughput as a share of the
machine's matrix-multiply FLOP/s.

Counted from the layers the model actually builds (read off an MGDSPR made on the meta device),
so a change of dim, heads, feed-forward width, LSTM depth or variant is followed automatically.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ebr.settings import ModelConfig

from .features import ACTIONS, ATTRS
from .model import MGDSPR, fusion_tokens, query_units, tables


def flops_per_example(cfg: ModelConfig, lengths: Mapping[str, float]) -> float:
    """Forward + backward FLOPs of one training example (a multiply-add is 2 FLOPs).

    lengths: the mean length of each sequence the model reads, named as the RequestBatch /
    ItemBatch fields of training/features.py; the rows' real lengths give the useful FLOPs, padded
    lengths what a padded batch computes:
      words       query words
      char1       query character unigrams               (query_unit "multi")
      char2       query character bigrams                (query_unit "multi")
      past        past queries per request               (personalised)
      past_words  words per past query                   (personalised)
      rt          real-time item sequence                (personalised)
      st          short-term item sequence               (personalised)
      rt_sq       mean squared length of rt (optional: rt squared when absent)
      st_sq       mean squared length of st (optional: st squared when absent)
      lt          each of the len(ATTRS) x len(ACTIONS) long-term lists (personalised)
      title       title words per item
      requests    requests per example in a batch (optional: 1 when absent); the user tower
                  runs once for each of a batch's requests, however many clicks it has
                  (train.batches)
    Only the keys the variant reads are needed. Self-attention terms square the given length,
    except the behaviour sequences' with rt_sq and st_sq: those run on groups of rows trimmed to
    their own longest (model._by_length), so their rows' lengths differ within a batch and the
    mean of the squares, not the square of the mean, counts their attention scores.

    Matrix products (Linear, LSTM gates, attention scores and values, logits) cost 2 x m x n x k
    forward and twice that backward (gradients of both operands). Mean pooling of embeddings
    (embedding_bag) costs one add per element forward and one backward. Element-wise ops
    (softmax, LayerNorm, activations) and the optimiser step are not counted.

    The per-example share of the batch-level work is included: the item tower of
    cfg.sampled_negatives items per cfg.batch_size examples, and the logits of each example
    against the pool (batch + sampled negatives) plus cfg.hard_negatives mixed hard negatives.
    """
    with torch.device("meta"):  # layer shapes only: no memory, no init cost
        model = MGDSPR(cfg, {name: 2 for name in tables(cfg)})
    d = cfg.dim
    m = query_units(cfg)
    L = lengths
    mm = pool = 0.0  # the user tower's forward matmul FLOPs, forward pooling FLOPs

    # Query unit.
    pool += L["words"] * d
    if cfg.query_unit == "multi":
        pool += (L["char1"] + L["char2"]) * d
        mm += _encoder(model.word_encoder, L["words"])
    if cfg.personalised:
        pool += L["past"] * L["past_words"] * d
        if cfg.query_unit == "multi":
            mm += _attend(1, L["past"], d)  # q_his
        # Real-time: LSTM, self-attention, read by Q.
        rt, st = L["rt"], L["st"]
        mm += _lstm(model.rt_lstm, rt) + _mha(model.rt_attn, rt, L.get("rt_sq"))
        mm += _attend(m, rt, d)
        # Short-term: self-attention, read by Q.
        mm += _mha(model.st_attn, st, L.get("st_sq")) + _attend(m, st, d)
        # Long-term: per attribute one pooled vector per action, read by Q.
        pool += len(ATTRS) * len(ACTIONS) * L["lt"] * d
        mm += len(ATTRS) * _attend(m, len(ACTIONS), d)
    mm += _first_output(model.fusion, fusion_tokens(cfg))
    share = L.get("requests", 1.0)  # of a user tower run, per example
    mm, pool = share * mm, share * pool

    # Item tower: the example's positive plus its share of the batch's sampled negatives.
    items = 1 + cfg.sampled_negatives / cfg.batch_size
    pool += items * L["title"] * d
    mm += items * _linear(model.title_proj, 1)

    # Logits against the pool, plus the mixed hard negatives (hinge has none).
    mm += 2 * d * (cfg.batch_size + cfg.sampled_negatives)
    if cfg.loss == "softmax":
        mm += 2 * d * cfg.hard_negatives
    return 3 * mm + 2 * pool


def _linear(layer: nn.Linear, tokens: float) -> float:
    return 2 * layer.in_features * layer.out_features * tokens


def _mha(layer: nn.MultiheadAttention, n: float, n_sq: float | None = None) -> float:
    """Self-attention over n tokens: q, k, v and output projections, scores and weighted sum.
    n_sq: the mean of n squared over rows of different lengths (n * n for one length)."""
    d = layer.embed_dim
    projections = 2 * layer.in_proj_weight.shape[0] * d * n + _linear(layer.out_proj, n)
    return projections + 2 * _attention_core(1, n * n if n_sq is None else n_sq, d)


def _attention_core(queries: float, keys: float, d: int) -> float:
    """q @ k^T or weights @ v: one of the two matmuls of attention (heads split d, not add)."""
    return 2 * queries * keys * d


def _attend(queries: int, keys: float, d: int) -> float:
    """model.attend: scores and weighted sum over the keys plus the leading zero vector."""
    return 2 * _attention_core(queries, keys + 1, d)


def _encoder(layer: nn.TransformerEncoderLayer, n: float) -> float:
    return _mha(layer.self_attn, n) + _linear(layer.linear1, n) + _linear(layer.linear2, n)


def _first_output(layer: nn.TransformerEncoderLayer, n: float) -> float:
    """model._first_output: keys and values of n tokens, everything else for the first token."""
    d = layer.self_attn.embed_dim
    qkv = 2 * d * d * (1 + 2 * n)
    first = _linear(layer.self_attn.out_proj, 1) + _linear(layer.linear1, 1)
    return qkv + 2 * _attention_core(1, n, d) + first + _linear(layer.linear2, 1)


def _lstm(layer: nn.LSTM, steps: float) -> float:
    """Per step and layer: the 4 gates from the input (W_ih) and from the hidden state (W_hh)."""
    per_step = sum(
        getattr(layer, f"weight_ih_l{k}").numel() + getattr(layer, f"weight_hh_l{k}").numel()
        for k in range(layer.num_layers)
    )
    return 2 * per_step * steps
