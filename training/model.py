"""MGDSPR, the two-tower model of "Embedding-based Product Retrieval in Taobao Search" (KDD 2021).

User tower: a multi-granular query unit Q (6 x d) attends over the user's real-time, short-term
and long-term behaviours; [CLS] + Q + the three behaviour readouts + a user-id token go through a
self-attention layer and the [CLS] output is the user embedding. Item tower: item-id embedding +
tanh(W * mean title words). Score = inner product.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ebr.settings import ModelConfig

from .features import ATTRS, ItemBatch, RequestBatch
from .vocab import PAD

Q_UNITS = 6  # 1-gram, 2-gram, words, word Transformer, history, mix
FUSION_TOKENS = 1 + 4 * Q_UNITS + 1  # [CLS], Q, real-time, short-term, long-term, user id


class MGDSPR(nn.Module):
    def __init__(self, cfg: ModelConfig, sizes: dict[str, int]):
        super().__init__()
        d, heads = cfg.dim, cfg.heads
        # One table per vocabulary (vocab.Vocabs). "word" serves query and title words alike and
        # "item" serves the item tower and the behaviour sequences: a new item is then reachable
        # through its title words, and clicks train the same vectors that get indexed.
        self.emb = nn.ModuleDict(
            {name: nn.Embedding(n, d, padding_idx=PAD) for name, n in sizes.items()}
        )
        self.word_pos = nn.Embedding(cfg.max_words, d)
        # Pre-norm: the output stays on the scale of the word embeddings it is summed with in q_mix.
        self.word_encoder = _transformer(d, heads, norm_first=True)
        self.rt_lstm = nn.LSTM(d, d, num_layers=2, batch_first=True)
        self.rt_attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.st_attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.cls = nn.Parameter(torch.empty(d))
        # Self-attention is permutation invariant: token positions tell the fusion layer which
        # branch and which granularity each token comes from.
        self.fusion_pos = nn.Parameter(torch.empty(FUSION_TOKENS, d))
        self.fusion = _transformer(d, heads, norm_first=False)  # ends in LayerNorm: bounded user
        self.title_proj = nn.Linear(d, d)
        # Small init (as nanoGPT): a fresh id row is near zero and cannot drown the title signal.
        with torch.no_grad():
            for table in [*self.emb.values(), self.word_pos]:
                nn.init.normal_(table.weight, std=0.02)
            for table in self.emb.values():
                table.weight[PAD].zero_()
            nn.init.normal_(self.cls, std=0.02)
            nn.init.normal_(self.fusion_pos, std=0.02)

    # --- user tower -------------------------------------------------------------------------

    def query_unit(self, b: RequestBatch) -> Tensor:
        """Q [B, 6, d]: the query at several granularities, plus the user's past queries."""
        word = self.emb["word"]
        q_1gram = _bag_mean(self.emb["char1"], b.char1)
        q_2gram = _bag_mean(self.emb["char2"], b.char2)
        q_seg = _bag_mean(word, b.words)
        wmask = b.words != PAD
        x = word(b.words) + self.word_pos(torch.arange(b.words.shape[1], device=b.words.device))
        q_seq = _mean(self.word_encoder(x, src_key_padding_mask=_ignore(wmask)), wmask)
        past = _bag_mean(word, b.past)  # [B, P, d]: each past query = mean of its words
        q_his = attend(q_seg[:, None], past, (b.past != PAD).any(-1))[:, 0]
        q_mix = q_1gram + q_2gram + q_seg + q_seq + q_his
        return torch.stack([q_1gram, q_2gram, q_seg, q_seq, q_his, q_mix], dim=1)

    def real_time(self, b: RequestBatch, Q: Tensor) -> Tensor:
        """Latest clicks: LSTM (order matters at this scale) then self-attention; read by Q."""
        mask = b.rt != PAD
        h, _ = self.rt_lstm(self.emb["item"](b.rt))  # right padding cannot leak into valid steps
        h, _ = self.rt_attn(h, h, h, key_padding_mask=_ignore(mask), need_weights=False)
        return attend(Q, h, mask)

    def short_term(self, b: RequestBatch, Q: Tensor) -> Tensor:
        mask = b.st != PAD
        e = self.emb["item"](b.st)
        h, _ = self.st_attn(e, e, e, key_padding_mask=_ignore(mask), need_weights=False)
        return attend(Q, h, mask)

    def long_term(self, b: RequestBatch, Q: Tensor) -> Tensor:
        """Per attribute, one mean-pooled vector per action (click/cart/purchase), read by Q."""
        out = 0
        for k, attr in enumerate(ATTRS):
            ids = b.lt[:, k]  # [B, actions, L]
            out = out + attend(Q, _bag_mean(self.emb[attr], ids), (ids != PAD).any(-1))
        return out

    def user_tower(self, b: RequestBatch) -> Tensor:
        Q = self.query_unit(b)
        tokens = [
            self.cls.expand(Q.shape[0], 1, -1),
            Q,
            self.real_time(b, Q),
            self.short_term(b, Q),
            self.long_term(b, Q),
            self.emb["user"](b.user)[:, None],  # the profile; new users get new rows (or UNK)
        ]
        return self.fusion(torch.cat(tokens, dim=1) + self.fusion_pos)[:, 0]

    # --- item tower -------------------------------------------------------------------------

    def item_tower(self, b: ItemBatch) -> Tensor:
        title = _bag_mean(self.emb["word"], b.title)
        return self.emb["item"](b.item) + torch.tanh(self.title_proj(title))


def attend(q: Tensor, kv: Tensor, mask: Tensor) -> Tensor:
    """q [B, m, d] attends over kv [B, L, d] (mask [B, L], True = valid) plus a leading zero vector.

    The zero vector stands for "nothing relevant": an empty or unrelated history then contributes
    (close to) nothing, and a row never softmaxes over an empty set (no NaN).
    """
    B, _, d = kv.shape
    kv = torch.cat([kv.new_zeros(B, 1, d), kv], dim=1)
    mask = torch.cat([mask.new_ones(B, 1), mask], dim=1)
    scores = (q @ kv.transpose(1, 2) / math.sqrt(d)).masked_fill(~mask[:, None], float("-inf"))
    return scores.softmax(-1) @ kv


def retrieval_loss(
    user: Tensor,
    pos: Tensor,
    pos_ids: Tensor,
    neg: Tensor,
    neg_ids: Tensor,
    cfg: ModelConfig,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Softmax cross-entropy of each user [B, d] against its positive pos [B, d].

    The pool is every in-batch positive plus the sampled items neg [S, d]; a pool entry that is the
    row's own positive item (same id) is masked. Relevance-improving hard negatives: the top-N pool
    items by score are mixed with the positive, alpha * pos + (1 - alpha) * hard, and these
    near-positive logits join the softmax denominator (cfg.hard_negatives = 0 turns them off).
    """
    B = user.shape[0]
    pool, pool_ids = torch.cat([pos, neg]), torch.cat([pos_ids, neg_ids])
    target = torch.arange(B, device=user.device)
    same = pos_ids[:, None] == pool_ids[None, :]
    same[target, target] = False  # the positive itself stays
    logits = (user @ pool.T / cfg.tau).masked_fill(same, float("-inf"))
    n = min(cfg.hard_negatives, pool.shape[0] - 1)
    if n > 0:
        negatives = logits.detach().clone()
        negatives[target, target] = float("-inf")
        top, idx = negatives.topk(n, dim=1)
        lo, hi = cfg.alpha_range
        alpha = (lo + (hi - lo) * torch.rand(B, n, 1, generator=generator)).to(user.device)
        mixed = alpha * pos[:, None] + (1 - alpha) * pool[idx]  # [B, n, d]
        hard = torch.einsum("bd,bnd->bn", user, mixed) / cfg.tau
        # Rows with fewer than n real negatives picked masked entries: drop those.
        logits = torch.cat([logits, hard.masked_fill(top.isinf(), float("-inf"))], dim=1)
    return F.cross_entropy(logits, target)


def grow_from(model: MGDSPR, state: dict[str, Tensor]) -> None:
    """Warm start: load a trained state into a model whose embedding tables may have grown.

    Vocabularies only append ids, so the old rows keep their index and are copied verbatim; the
    new rows keep the model's fresh initialisation.
    """
    own = model.state_dict()
    if own.keys() != state.keys():
        raise ValueError(f"state does not match the model: {sorted(own.keys() ^ state.keys())}")
    with torch.no_grad():
        for name, old in state.items():
            new = own[name]
            grows = name.startswith("emb.") and old.shape[1:] == new.shape[1:]
            grows = grows and len(old) <= len(new)
            if old.shape != new.shape and not grows:
                raise ValueError(f"{name}: cannot load {tuple(old.shape)} into {tuple(new.shape)}")
            new[: len(old)].copy_(old)


def _transformer(d: int, heads: int, norm_first: bool) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        d, heads, dim_feedforward=4 * d, dropout=0.0, batch_first=True, norm_first=norm_first
    )


def _mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x [B, L, d] over the valid positions of mask [B, L]."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


def _bag_mean(table: nn.Embedding, ids: Tensor) -> Tensor:
    """Mean embedding of ids [..., L] ignoring padding (zeros when all padding) -> [..., d].

    embedding_bag pools without materialising the [..., L, d] lookups (long-term: B x 12 x 100).
    """
    flat = ids.reshape(-1, ids.shape[-1])
    pooled = F.embedding_bag(flat, table.weight, mode="mean", padding_idx=PAD)
    return pooled.view(*ids.shape[:-1], -1)


def _ignore(mask: Tensor) -> Tensor:
    """Key padding mask for torch attention (True = ignore) from a validity mask.

    Position 0 always stays visible: an empty row would otherwise softmax over nothing (NaN). Rows
    are right-padded, so this only touches empty rows, whose outputs `attend` masks out anyway.
    """
    ignore = ~mask
    ignore[:, 0] = False
    return ignore
