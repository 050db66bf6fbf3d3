"""MGDSPR, the two-tower model of "Embedding-based Product Retrieval in Taobao Search" (KDD 2021).

User tower: a multi-granular query unit Q (6 x d) attends over the user's real-time, short-term
and long-term behaviours; [CLS] + Q + the three behaviour readouts + a user-id token go through a
self-attention layer and the [CLS] output is the user embedding. Item tower: item-id embedding +
tanh(W * mean title words). Score = inner product.

ModelConfig picks the variants the evaluation compares: query_unit="words" keeps only the mean of
the query words in Q, personalised=False drops everything about the user (behaviour sequences,
past queries, user id), loss="hinge" trains with a pairwise hinge loss instead of the sampled
softmax. A variant builds only the modules and embedding tables it reads.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ebr import serving_ops
from ebr.settings import ModelConfig

from .features import ATTRS, ItemBatch, RequestBatch
from .vocab import PAD


def tables(cfg: ModelConfig) -> set[str]:
    """The vocabularies (vocab.Vocabs fields) whose embedding tables the variant reads."""
    used = {"word", "item"}  # query and title words; the item tower
    if cfg.query_unit == "multi":
        used |= {"char1", "char2"}
    if cfg.personalised:
        used |= {"user", *ATTRS}
    return used


def query_units(cfg: ModelConfig) -> int:
    """How many granularities Q holds (see MGDSPR.query_unit)."""
    if cfg.query_unit == "words":
        return 1
    return 6 if cfg.personalised else 5  # past queries are the user's: gone without personalisation


def fusion_tokens(cfg: ModelConfig) -> int:
    """[CLS] and Q, then (personalised) the real-time, short-term and long-term readouts of Q,
    one token per unit each, and the user id."""
    m = query_units(cfg)
    return 1 + m + (3 * m + 1 if cfg.personalised else 0)


class MGDSPR(nn.Module):
    def __init__(self, cfg: ModelConfig, sizes: dict[str, int]):
        super().__init__()
        self.cfg = cfg
        d, heads = cfg.dim, cfg.heads
        multi = cfg.query_unit == "multi"
        # One table per vocabulary (vocab.Vocabs). "word" serves query and title words alike and
        # "item" serves the item tower and the behaviour sequences: a new item is then reachable
        # through its title words, and clicks train the same vectors that get indexed. Only the
        # item tower trains it (see history).
        # Sparse gradients: a step touches a few thousand rows of tables that grow to millions of
        # ids; a dense gradient (and a dense Adam step) would cost the whole table every step.
        used = tables(cfg)
        self.emb = nn.ModuleDict(
            {
                name: nn.Embedding(n, d, padding_idx=PAD, sparse=True)
                for name, n in sizes.items()
                if name in used
            }
        )
        if multi:
            self.word_pos = nn.Embedding(cfg.max_words, d)
            # Pre-norm: the output stays on the scale of the word embeddings it joins in q_mix.
            self.word_encoder = _transformer(d, heads, norm_first=True)
        if cfg.personalised:
            self.rt_lstm = nn.LSTM(d, d, num_layers=2, batch_first=True)
            self.rt_attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.st_attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.cls = nn.Parameter(torch.empty(d))
        # Self-attention is permutation invariant: token positions tell the fusion layer which
        # branch and which granularity each token comes from.
        self.fusion_pos = nn.Parameter(torch.empty(fusion_tokens(cfg), d))
        self.fusion = _transformer(d, heads, norm_first=False)  # ends in LayerNorm: bounded user
        self.title_proj = nn.Linear(d, d)
        # Small init (as nanoGPT): a fresh id row is near zero and cannot drown the title signal.
        with torch.no_grad():
            for table in self.modules():
                if isinstance(table, nn.Embedding):  # the id tables and word positions
                    nn.init.normal_(table.weight, std=0.02)
                    if table.padding_idx is not None:
                        table.weight[table.padding_idx].zero_()
            nn.init.normal_(self.cls, std=0.02)
            nn.init.normal_(self.fusion_pos, std=0.02)

    # --- user tower -------------------------------------------------------------------------

    def query_unit(self, b: RequestBatch, kept: Tensor | None = None) -> Tensor:
        """Q [B, query_units(cfg), d]: the query at several granularities and, personalised, the
        user's past queries; for query_unit="words" only the mean of the query words.
        kept: `unit_kept`'s rows for this batch, when drawn by the caller."""
        word = self.emb["word"]
        q_seg = _bag_mean(word, b.words)
        if self.cfg.query_unit == "words":
            return q_seg[:, None]
        q_1gram = _bag_mean(self.emb["char1"], b.char1)
        q_2gram = _bag_mean(self.emb["char2"], b.char2)
        wmask = b.words != PAD
        x = word(b.words) + self.word_pos(torch.arange(b.words.shape[1], device=b.words.device))
        q_seq = _mean(_pre_norm_layer(self.word_encoder, x, wmask), wmask)
        kept = self.unit_kept(q_seq.shape[0]) if kept is None else kept
        if kept is not None:
            q_seq = q_seq * kept.to(q_seq.device)
        units = [q_1gram, q_2gram, q_seg, q_seq]
        if self.cfg.personalised:
            past = _bag_mean(word, b.past)  # [B, P, d]: each past query = mean of its words
            units.append(attend(q_seg[:, None], past, (b.past != PAD).any(-1))[:, 0])  # q_his
        units.append(torch.stack(units).sum(0))  # q_mix
        return torch.stack(units, dim=1)

    def history(self, ids: Tensor) -> Tensor:
        """The items of a behaviour sequence as the item tower's id rows, read but not trained.

        Trained from both sides, a row is pulled between the vector that retrieves its item and
        a feature of what its clickers ask next, and the indexed vectors pay: read only, MGDSPR's
        CrowdFlower relevance@10 rose from 0.41 to 0.46 on three seeds' mean, its spread over
        the seeds from 0.13 to 0.02 (docs/quality.md)."""
        return self.emb["item"](ids).detach()

    def real_time(self, b: RequestBatch, Q: Tensor) -> Tensor:
        """Latest clicks: LSTM (order matters at this scale) then self-attention; read by Q."""
        return _by_length(self._real_time, b.rt, Q)

    def _real_time(self, ids: Tensor, Q: Tensor) -> Tensor:
        mask = ids != PAD
        x = self.history(ids)
        # Right padding cannot leak into valid steps.
        if torch.compiler.is_exporting():
            h = serving_ops.lstm(x, list(self.rt_lstm._flat_weights), self.rt_lstm.num_layers)
        else:
            h, _ = self.rt_lstm(x)
        return attend(Q, _self_attention(self.rt_attn, h, mask), mask)

    def short_term(self, b: RequestBatch, Q: Tensor) -> Tensor:
        return _by_length(self._short_term, b.st, Q)

    def _short_term(self, ids: Tensor, Q: Tensor) -> Tensor:
        mask = ids != PAD
        return attend(Q, _self_attention(self.st_attn, self.history(ids), mask), mask)

    def long_term(self, b: RequestBatch, Q: Tensor) -> Tensor:
        """Per attribute, one mean-pooled vector per action (click/cart/purchase), read by Q."""
        out = []
        for k, attr in enumerate(ATTRS):
            ids = b.lt[:, k]  # [B, actions, L]
            pooled = _bag_mean(self.emb[attr], ids, trained=attr != "item")  # item: see history
            out.append(attend(Q, pooled, (ids != PAD).any(-1)))
        return torch.stack(out).sum(0)

    def unit_kept(self, n: int) -> Tensor | None:
        """[n, 1]: which of n requests keep the Transformer unit while training
        (cfg.transformer_unit_dropout), drawn like nn.Dropout's (torch's RNG); None when none is
        dropped. Training ranks draw it for the whole batch, each reading its requests' rows."""
        p = self.cfg.transformer_unit_dropout
        if not self.training or p == 0 or self.cfg.query_unit == "words":
            return None
        return torch.rand(n, 1) >= p

    def user_tower(self, b: RequestBatch, kept: Tensor | None = None) -> Tensor:
        Q = self.query_unit(b, kept)
        tokens = [self.cls.expand(Q.shape[0], 1, -1), Q]
        if self.cfg.personalised:
            tokens += [
                self.real_time(b, Q),
                self.short_term(b, Q),
                self.long_term(b, Q),
                self.emb["user"](b.user)[:, None],  # the profile; new users get new rows (or UNK)
            ]
        return _first_output(self.fusion, torch.cat(tokens, dim=1) + self.fusion_pos)

    # --- item tower -------------------------------------------------------------------------

    def item_tower(self, b: ItemBatch) -> Tensor:
        title = _bags_mean(self.emb["word"], b.words, b.offsets)
        return self.emb["item"](b.item) + _tanh(self.title_proj(title))

    @torch.no_grad()
    def item_norm_bound(self) -> float:
        """An upper bound on the norm of any item vector this tower can output, from its weights
        alone (no pass over the corpus): |id row| + |tanh(W m + c)|, where the title mean m is
        no longer than the longest word row, so output i is at most tanh(|W_i| |m| + |c_i|)."""
        rows = {
            name: self.emb[name].get_parameter("weight").norm(dim=1) for name in ("word", "item")
        }
        W, c = self.title_proj.weight, self.title_proj.bias
        title = _tanh(W.norm(dim=1) * rows["word"].max() + c.abs()).norm()
        return float(rows["item"].max() + title)


def attend(q: Tensor, kv: Tensor, mask: Tensor) -> Tensor:
    """q [B, m, d] attends over kv [B, L, d] (mask [B, L], True = valid) plus a leading zero vector.

    The zero vector stands for "nothing relevant": an empty or unrelated history then contributes
    (close to) nothing, and a row never softmaxes over an empty set (no NaN).
    """
    B, _, d = kv.shape
    # float32 even under bfloat16 autocast (cfg.precision): these batched products are too small
    # for the CPU's bfloat16 units to gain, and the casts cost.
    with _float32(q.device):
        q, kv = q.float(), kv.float()
        kv = torch.cat([kv.new_zeros(B, 1, d), kv], dim=1)
        mask = torch.cat([mask.new_ones(B, 1), mask], dim=1)
        scores = (q @ kv.transpose(1, 2) / math.sqrt(d)).masked_fill(~mask[:, None], float("-inf"))
        return scores.softmax(-1) @ kv


# --- losses ------------------------------------------------------------------------------------
# All take users [B, d], their positives pos [B, d] with identities pos_keys [B], and sampled
# items neg [S, d] with identities neg_keys [S] (integers equal where the item is the same; not
# id rows, which items without one share). Every row is scored against the same pool: the
# in-batch positives, then the sampled items; pool entries that are the row's own item (same key)
# are masked. requests [B] (optional) names each row's request: rows of one request (a request
# with several clicks) share their positives, so an entry holding another click of the row's own
# request is masked too rather than taught as a negative.


def retrieval_loss(
    user: Tensor,
    pos: Tensor,
    pos_keys: Tensor,
    neg: Tensor,
    neg_keys: Tensor,
    cfg: ModelConfig,
    generator: torch.Generator | None = None,
    log_q: Tensor | None = None,
    requests: Tensor | None = None,
    first: int = 0,
) -> Tensor:
    """The loss cfg.loss names: softmax_loss or hinge_loss (which takes no log_q)."""
    if cfg.loss == "hinge":
        return hinge_loss(user, pos, pos_keys, neg, neg_keys, cfg, requests, first)
    return softmax_loss(user, pos, pos_keys, neg, neg_keys, cfg, generator, log_q, requests, first)


def softmax_loss(
    user: Tensor,
    pos: Tensor,
    pos_keys: Tensor,
    neg: Tensor,
    neg_keys: Tensor,
    cfg: ModelConfig,
    generator: torch.Generator | None = None,
    log_q: Tensor | None = None,
    requests: Tensor | None = None,
    first: int = 0,
) -> Tensor:
    """Softmax cross-entropy (temperature cfg.tau) of each user against its positive.

    Relevance-improving hard negatives: the top-N pool items by score are mixed with the positive,
    alpha * pos + (1 - alpha) * hard, and these near-positive logits join the softmax denominator
    (cfg.hard_negatives = 0 turns them off).

    log_q [B + S] (cfg.sampling_correction): the log of each pool entry's expected count in the
    pool, the positives' then the sampled negatives', subtracted from its logit; a mixed entry
    takes the same mix of its two items' corrections. The hard negatives are still picked by
    score alone, as the paper picks them.

    first: user holds the rows of positives first..first + len(user) (a training rank's share of
    a batch, training.workers); the other positives are negatives to them, as in one process.
    """
    B = user.shape[0]
    rows = slice(first, first + B)
    pool, same = _pool(pos, pos_keys, neg, neg_keys, requests, rows)
    row = torch.arange(B, device=user.device)
    target = row + first
    same[row, target] = False  # the positive itself stays
    scores = (user @ pool.T / cfg.tau).masked_fill(same, float("-inf"))
    logits = scores if log_q is None else scores - log_q
    n = min(cfg.hard_negatives, pool.shape[0] - 1)
    if n > 0:
        negatives = scores.detach().clone()
        negatives[row, target] = float("-inf")
        top, idx = negatives.topk(n, dim=1)
        lo, hi = cfg.alpha_range
        # Drawn for every positive, the user's rows read: each rank draws what one process does.
        alpha = lo + (hi - lo) * torch.rand(pos.shape[0], n, 1, generator=generator)
        alpha = alpha[rows].to(user.device)
        mixed = alpha * pos[rows, None] + (1 - alpha) * pool[idx]  # [B, n, d]
        hard = torch.einsum("bd,bnd->bn", user, mixed) / cfg.tau
        if log_q is not None:
            a = alpha[..., 0]
            hard = hard - (a * log_q[rows, None] + (1 - a) * log_q[idx])
        # Rows with fewer than n real negatives picked masked entries: drop those.
        logits = torch.cat([logits, hard.masked_fill(top.isinf(), float("-inf"))], dim=1)
    return F.cross_entropy(logits, target)


def hinge_loss(
    user: Tensor,
    pos: Tensor,
    pos_keys: Tensor,
    neg: Tensor,
    neg_keys: Tensor,
    cfg: ModelConfig,
    requests: Tensor | None = None,
    first: int = 0,
) -> Tensor:
    """Pairwise hinge, the loss of two-tower retrieval before MGDSPR: the mean over every (row,
    negative) pair of max(0, cfg.hinge_margin - s(u, pos) + s(u, neg)). No temperature and no
    hard-negative mixing: cfg.tau and cfg.hard_negatives do not apply. first: softmax_loss's."""
    rows = slice(first, first + user.shape[0])
    pool, own = _pool(pos, pos_keys, neg, neg_keys, requests, rows)
    positive = (user * pos[rows]).sum(-1, keepdim=True)  # [B, 1]
    hinge = (cfg.hinge_margin - positive + user @ pool.T).clamp(min=0)
    pairs = ~own
    # A pool holding only the rows' own items has no pair to rank: zero loss, not 0 / 0.
    return (hinge * pairs).sum() / pairs.sum().clamp(min=1)


def _pool(
    pos: Tensor,
    pos_keys: Tensor,
    neg: Tensor,
    neg_keys: Tensor,
    requests: Tensor | None = None,
    rows: slice = slice(None),
) -> tuple[Tensor, Tensor]:
    """The pool [B + S, d], and [B, B + S] True where an entry is the row's own item (the
    positive itself on the diagonal, and any copy of it) or, given requests, the item of any row
    of the same request; the mask of the positives' `rows` only."""
    pool_keys = torch.cat([pos_keys, neg_keys])
    own = pos_keys[:, None] == pool_keys[None, :]
    if requests is not None:
        # Entry j is masked for row i when some row of i's request has j's item: the rows' masks
        # summed per request, then read back by each row: at B 256 and S 1,024 (one thread) half
        # the time of a [B, B] @ [B, B + S] product of the same-request matrix (2.4-2.7 ms
        # against 4.5-6.9).
        _, request = torch.unique(requests, return_inverse=True)
        per_request = torch.zeros(own.shape, device=own.device).index_add_(0, request, own.float())
        own = per_request[request] > 0
    return torch.cat([pos, neg]), own[rows]


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


# A length group costs about as much as this many padded positions besides its rows' positions:
# one thread, d 128, forward and backward under bfloat16, the real-time branch took ~4 ms a group
# plus ~0.011 ms a position, the short-term one ~1.1 ms plus ~0.0045 ms (see _length_groups).
GROUP_COST = 300


def _by_length(branch, ids: Tensor, Q: Tensor) -> Tensor:
    """branch(ids, Q) for a branch that ends in attend(Q, ..., ids != PAD), run on groups of rows
    of similar length (_length_groups), each trimmed to its own longest row; the same result as
    one run on the whole batch (rows are independent). Rows without an id get zeros without
    running: attend gives them the leading zero vector's value, exactly zero.

    Histories are long-tailed (medium day 2, a batch of 256: real-time clicks empty in 83 rows,
    3 at the median, 50 (the most kept) in over 10%; short-term empty in 228 rows and 100 in 20),
    so padded to the batch's longest row, the LSTM and the self-attention would mostly compute
    padding. Against four equal groups of rows by length, the short-term branch took 0.39x the
    time and the real-time one 0.98x (forward and backward under bfloat16, one thread, medians of
    five passes over 16 batches).
    """
    if torch.compiler.is_exporting():  # lengths are data: the exported graph runs one group
        return branch(ids, Q)
    lengths = (ids != PAD).sum(1).cpu().numpy()  # one transfer: groups are cut on the host
    out = torch.zeros(Q.shape, device=Q.device)  # attend's output: float32 under autocast too
    for group in _length_groups(lengths):
        rows = torch.from_numpy(group).to(ids.device)
        out[rows] = branch(ids[rows, : lengths[group[-1]]], Q[rows])
    return out


def _length_groups(lengths: np.ndarray) -> list[np.ndarray]:
    """The rows of nonzero length, in groups of consecutive rows of the order by length: the
    grouping with the fewest positions once each group is padded to its longest row, counting
    GROUP_COST positions a group. Each group ends with its longest row."""
    order = np.argsort(lengths, kind="stable")
    order = order[lengths[order] > 0]
    longest, counts = np.unique(lengths[order], return_counts=True)
    ends = np.concatenate([[0], np.cumsum(counts)])  # rows up to each distinct length
    # best[j]: the least cost of the rows up to the j-th distinct length; start[j]: where (in
    # distinct lengths) that grouping's last group starts.
    best = np.zeros(len(longest) + 1)
    start = np.zeros(len(longest) + 1, np.int64)
    for j in range(1, len(longest) + 1):
        cost = best[:j] + GROUP_COST + (ends[j] - ends[:j]) * longest[j - 1]
        start[j] = np.argmin(cost)
        best[j] = cost[start[j]]
    groups, j = [], len(longest)
    while j > 0:
        groups.append(order[ends[start[j]] : ends[j]])
        j = start[j]
    return groups[::-1]


def _transformer(d: int, heads: int, norm_first: bool) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        d, heads, dim_feedforward=4 * d, dropout=0.0, batch_first=True, norm_first=norm_first
    )


def _pre_norm_layer(layer: nn.TransformerEncoderLayer, x: Tensor, mask: Tensor) -> Tensor:
    """layer(x, src_key_padding_mask=~_visible(mask)) for a pre-norm layer without dropout, with
    _self_attention (the same result on the valid positions)."""
    x = x + _self_attention(layer.self_attn, layer.norm1(x), mask)
    return x + layer.linear2(layer.activation(layer.linear1(layer.norm2(x))))


def _first_output(layer: nn.TransformerEncoderLayer, x: Tensor) -> Tensor:
    """layer(x)[:, 0] for a post-norm layer without dropout, computing only what that output
    needs: every token's key and value but only the first token's query, attention, norms and
    feed-forward (the [CLS] fusion: a fifth of the layer's FLOPs, the same result)."""
    h = layer.norm1(x[:, :1] + _self_attention(layer.self_attn, x, queries=1))
    h = layer.norm2(h + layer.linear2(layer.activation(layer.linear1(h))))
    return h[:, 0]


def _mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x [B, L, d] over the valid positions of mask [B, L]."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


def _tanh(x: Tensor) -> Tensor:
    """tanh(x) as 2 sigmoid(2x) - 1, in float32: within 2e-7 of torch.tanh, with its gradient.
    torch's tanh ran at 0.2G elements/s a thread on an AVX2 CPU (AMD EPYC), a fifth of its
    sigmoid, and took a third of the item tower's time encoding the corpus."""
    return 2 * torch.sigmoid(2 * x.float()) - 1


def _bag_mean(table: nn.Module, ids: Tensor, trained: bool = True) -> Tensor:
    """Mean embedding of ids [..., L] ignoring padding (zeros when all padding) -> [..., d];
    trained=False reads the table without training it (no gradient reaches it).

    Padding is dropped first (long-term lists: B x 3 x 100 positions, mostly padding) and the
    distinct ids are looked up once: the table's (sparse) gradient then has a row per distinct
    id, not per position. embedding_bag pools without materialising the [..., L, d] lookups.
    """
    if torch.compiler.is_exporting():  # no data-dependent shapes (unique) in an exported graph
        return _mean(table(ids).flatten(0, -3), (ids != PAD).flatten(0, -2)).view(
            *ids.shape[:-1], -1
        )
    flat = ids.reshape(-1, ids.shape[-1])
    valid = flat != PAD
    counts = valid.sum(1)
    return _bags_mean(table, flat[valid], counts.cumsum(0) - counts, trained).view(
        *ids.shape[:-1], -1
    )


def _bags_mean(table: nn.Module, ids: Tensor, offsets: Tensor, trained: bool = True) -> Tensor:
    """Mean embedding of each bag ids[offsets[k] : offsets[k + 1]] -> [bags, d], zeros for an
    empty bag; see _bag_mean."""
    if not (trained and torch.is_grad_enabled()):  # no gradient: pool straight from the table
        return F.embedding_bag(ids, table.get_parameter("weight").detach(), offsets, mode="mean")
    distinct, local = torch.unique(ids, return_inverse=True)
    return F.embedding_bag(local, table(distinct), offsets, mode="mean")


def _self_attention(
    attn: nn.MultiheadAttention, x: Tensor, mask: Tensor | None = None, queries: int | None = None
) -> Tensor:
    """attn(x[:, :queries], x, x) (every position queries when None) over the valid positions of
    mask [B, L] (see _visible; all when None), batch first all the way: nn.MultiheadAttention
    turns the batch to sequence-first and splits q, k and v by indexing, whose backward
    zero-fills and copies three times the projection; this does the same sums on the same
    weights 1.3x faster forward and backward (64 x 100 x 128, one thread).
    """
    B, L, d = x.shape
    heads, W, c = attn.num_heads, attn.in_proj_weight, attn.in_proj_bias
    if queries is None:
        qkv = F.linear(x, W, c).view(B, L, 3, heads, d // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, L, d / heads]
    else:
        q = F.linear(x[:, :queries], W[:d], c[:d]).view(B, queries, heads, d // heads)
        q = q.transpose(1, 2)
        kv = F.linear(x, W[d:], c[d:]).view(B, L, 2, heads, d // heads)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
    keep = None if mask is None else _visible(mask)[:, None, None, :]
    # float32 even under bfloat16 autocast (cfg.precision): on the CPU the fused attention's
    # bfloat16 backward ran 7x slower than its float32 one, more than the rest of the step gains.
    with _float32(q.device):
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=keep)
    return attn.out_proj(out.transpose(1, 2).reshape(B, -1, d))


def _float32(device: torch.device) -> contextlib.AbstractContextManager:
    """float32 arithmetic inside a bfloat16 autocast region (training, cfg.precision); nothing
    elsewhere (encoding and an exported serving graph never autocast)."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _visible(mask: Tensor) -> Tensor:
    """The keys self-attention may read (True = attend) from a validity mask: the valid ones, and
    position 0 always, since an empty row would otherwise softmax over nothing (NaN). Rows are
    right-padded, so this only touches empty rows, whose outputs `attend` masks out anyway.
    """
    visible = mask.clone()
    visible[:, 0] = True
    return visible
