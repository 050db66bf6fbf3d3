"""MGDSPR building blocks: vocabularies, features, towers, losses, variants, warm starts."""

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ebr.query_encoder import load_query_encoder
from ebr.settings import ModelConfig
from training import features
from training import model as model_module
from training.artifact import Artifact
from training.export import export_query_encoder
from training.features import LT_COLUMNS
from training.model import (
    MGDSPR,
    _bag_mean,
    _first_output,
    _length_groups,
    _pre_norm_layer,
    _self_attention,
    attend,
    fusion_tokens,
    grow_from,
    query_units,
    retrieval_loss,
)
from training.optim import LazyAdam, optimisers
from training.vocab import PAD, UNK, Vocab, Vocabs

CFG = ModelConfig(
    dim=32, heads=4, rt_len=4, st_len=6, lt_len=3, past_queries=2, max_words=5, max_chars=12
)


def request_table(rows: list[dict]) -> pa.Table:
    """Mart-shaped request rows; behaviour lists default to empty."""
    empty = {"rt_items": [], "st_items": [], "past_queries": [], **{c: [] for c in LT_COLUMNS}}
    return pa.Table.from_pylist([{**empty, **row} for row in rows])


@pytest.fixture
def rows() -> pa.Table:
    return request_table(
        [
            {
                "user_id": "u1",
                "query": "Red Café  Mug, 2x!",
                "rt_items": ["i1", "i2", "i3", "i4", "i5", "i6"],
                "st_items": ["i7", "i8"],
                "past_queries": ["blue mug", "tea", "teapot set"],
                "lt_click_item": ["i1", "i1", "i2", "i3", "i9"],
                "lt_cart_shop": ["s1"],
                "lt_purchase_brand": ["b1", ""],
            },
            {"user_id": "u2", "query": "kettle"},  # no history at all
        ]
    )


@pytest.fixture
def vocabs(rows) -> Vocabs:
    v = Vocabs()
    features.requests(rows, v, CFG, grow=True)
    return v


def model_for(vocabs: Vocabs, seed: int = 0) -> MGDSPR:
    torch.manual_seed(seed)
    return MGDSPR(CFG, vocabs.sizes()).eval()


def test_vocab_grows_appends_and_round_trips():
    v = Vocabs()
    assert v.item.encode(["a", "b", "a"], grow=True) == [2, 3, 2]
    assert v.item.encode(["a", "new"], grow=False) == [2, UNK]
    assert v.brand.add("") == UNK  # "" brand is unknown, not a token
    assert len(v.item) == 4 and v.sizes()["item"] == 4
    tokens = pa.array(["b", "", None, "new", "a", "b"])
    assert v.item.lookup(tokens).tolist() == [3, UNK, UNK, UNK, 2, 3]
    v.item.add("new")  # the Arrow copy of the tokens follows the growth
    assert v.item.lookup(tokens).tolist() == [3, UNK, UNK, 4, 2, 3]
    back = Vocabs.from_json(v.to_json())
    assert back.to_json() == v.to_json() and back.sizes() == v.sizes()
    assert Vocab(["<pad>"]).get("<pad>") == 2  # reserved ids are not reachable by name


def test_features_pad_to_batch_longest_and_truncate(rows, vocabs):
    reqs = features.requests(rows, vocabs, CFG, grow=False)
    b = reqs.batch([0, 1])
    assert b.words.shape == (2, 4)  # "red cafe mug 2x": longest in batch, below max_words
    assert b.rt.shape == (2, CFG.rt_len)  # 6 clicks: the 4 most recent are kept
    assert b.rt[0].tolist() == vocabs.item.encode(["i3", "i4", "i5", "i6"], grow=False)
    assert b.st.shape == (2, 2)
    assert b.past.shape == (2, 2, 2)  # last 2 past queries, longest has 2 words
    assert b.lt.shape == (2, 4, 3, 3)  # attrs x actions x longest (truncated to lt_len)
    assert b.lt[0, 0, 0].tolist() == vocabs.item.encode(["i2", "i3", "i9"], grow=False)
    assert b.lt[0, 3, 2].tolist() == [vocabs.brand.get("b1"), UNK, PAD]  # "" brand -> UNK
    assert b.char1.shape[1] == CFG.max_chars
    # A batch without any history still has one (padding) position per sequence.
    empty = reqs.batch([1])
    assert (empty.rt.shape, empty.past.shape, empty.lt.shape) == ((1, 1), (1, 1, 1), (1, 4, 3, 1))
    # Inference never grows: unknown user and words map to UNK.
    sizes = vocabs.sizes()
    unseen = request_table([{"user_id": "u9", "query": "zzz"}])
    encoded = features.requests(unseen, vocabs, CFG, grow=False)
    unseen_batch = encoded.batch([0])
    assert unseen_batch.user.tolist() == [UNK] and unseen_batch.words.tolist() == [[UNK]]
    assert vocabs.sizes() == sizes
    # DuckDB may hand over pandas (list cells as numpy arrays): same features.
    from_pandas = features.requests(rows.to_pandas(), vocabs, CFG, grow=False).batch([0, 1])
    assert all(torch.equal(getattr(from_pandas, f), getattr(b, f)) for f in b.__dataclass_fields__)


def test_shapes_of_every_branch(rows, vocabs):
    model = model_for(vocabs)
    b = features.requests(rows, vocabs, CFG, grow=False).batch([0, 1])
    d = CFG.dim
    Q = model.query_unit(b)
    assert Q.shape == (2, 6, d)
    for branch in (model.real_time, model.short_term, model.long_term):
        assert branch(b, Q).shape == (2, 6, d)
    assert model.user_tower(b).shape == (2, d)
    v = Vocabs()
    corpus = pa.table({"item_id": ["i1", "i2", "i3"], "title": ["red mug", "tea", ""]})
    items = features.items(corpus, v, CFG, grow=True)
    assert model_for(v).item_tower(items.batch([0, 1, 2])).shape == (3, d)


def test_item_tower_pools_each_ragged_title_over_its_own_words_values_and_gradients():
    """id row + tanh(W mean(title word rows)): an unpadded title pools exactly its own words,
    repeats counted, and an empty title pools to zero; the word table's gradient follows."""
    v = Vocabs()
    titles = ["red mug red", "", "tea", "blue tea pot set"]
    corpus = pa.table({"item_id": ["i1", "i2", "i3", "i4"], "title": titles})
    items = features.items(corpus, v, CFG, grow=True)
    model = model_for(v).train()
    rows = [3, 1, 0, 2, 0]
    ours = model.item_tower(items.batch(rows))
    ours.square().sum().backward()
    word = model.emb["word"].get_parameter("weight")
    grad = word.grad.to_dense() if word.grad.is_sparse else word.grad.clone()
    model.zero_grad()
    means = [
        word[v.word.encode(titles[r].split(), grow=False)].mean(0)
        if titles[r]
        else torch.zeros(CFG.dim)
        for r in rows
    ]
    item = model.emb["item"](torch.tensor(items.item[rows], dtype=torch.int64))
    theirs = item + torch.tanh(model.title_proj(torch.stack(means)))
    theirs.square().sum().backward()
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert grad[v.word.get("red")].abs().sum() > 0
    expected = word.grad.to_dense() if word.grad.is_sparse else word.grad
    assert torch.allclose(grad, expected, atol=1e-6)


def test_the_item_towers_tanh_is_torchs_within_float_rounding_values_and_gradients():
    """model._tanh (2 sigmoid(2x) - 1, faster on AVX2 CPUs) against torch.tanh, saturation
    included; a bfloat16 input (training under autocast) comes out float32."""
    x = torch.cat([torch.linspace(-30, 30, 2001), torch.tensor([0.0, 1e-6, -1e-6])])
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    model_module._tanh(ours).sum().backward()
    torch.tanh(theirs).sum().backward()
    assert torch.allclose(model_module._tanh(x), torch.tanh(x), rtol=0, atol=3e-7)
    assert torch.allclose(ours.grad, theirs.grad, rtol=0, atol=1e-6)
    assert model_module._tanh(x.bfloat16()).dtype == torch.float32


def test_item_norm_bound_holds_for_every_item_also_with_saturating_weights():
    """The collection stores sqrt(B^2 - |x|^2) beside each item (indexing.store.item_side): B, from
    the weights alone, must bound every item vector. How loose it is does not matter there (an
    HNSW probe at 50k items: the same recall with B at 1, 2 and 4 times the longest item)."""
    v = Vocabs()
    words = [f"w{k}" for k in range(30)]
    rng = np.random.default_rng(0)
    titles = [" ".join(rng.choice(words, size=rng.integers(0, 6))) for _ in range(400)]
    corpus = pa.table({"item_id": [f"i{k}" for k in range(400)], "title": titles})
    items = features.items(corpus, v, CFG, grow=True)
    model = model_for(v)
    for scale in (1.0, 10.0, 100.0):  # tanh saturates, the bound nears |id row| + sqrt(d)
        with torch.no_grad():
            model.emb["word"].weight.mul_(scale)
        with torch.no_grad():
            norms = model.item_tower(items.batch(range(400))).norm(dim=1)
        bound = model.item_norm_bound()
        assert norms.max() <= bound, (scale, float(norms.max()), bound)


def test_empty_history_contributes_nothing(rows, vocabs):
    model = model_for(vocabs)
    b = features.requests(rows, vocabs, CFG, grow=False).batch([0, 1])  # row 1 has no history
    with torch.no_grad():
        Q = model.query_unit(b)
        for branch in (model.real_time, model.short_term, model.long_term):
            out = branch(b, Q)
            assert torch.isfinite(out).all()
            assert out[1].abs().max() == 0  # only the zero vector was there to attend to
            assert out[0].abs().max() > 0
        assert torch.isfinite(model.user_tower(b)).all()
        # A batch where nobody has history (all lists padded to length 1) is fine too.
        alone = features.requests(rows, vocabs, CFG, grow=False).batch([1])
        assert torch.isfinite(model.user_tower(alone)).all()
    # The zero vector also absorbs attention when the history is unrelated to the query.
    q = torch.ones(1, 1, 4)
    assert attend(q, -2 * torch.ones(1, 3, 4), torch.ones(1, 3, dtype=torch.bool)).abs().max() < 0.2


def test_length_groups_hold_each_row_with_history_once_and_their_cost_sets_how_many(monkeypatch):
    lengths = np.array([0, 5, 1, 0, 100, 5, 2, 100, 1])
    # At GROUP_COST 300, one group costs 300 + 7 x 100; two 600 + 5 x 5 + 2 x 100, the least;
    # three 900 + 3 x 2 + 2 x 5 + 2 x 100.
    assert [g.tolist() for g in _length_groups(lengths)] == [[2, 8, 6, 1, 5], [4, 7]]
    monkeypatch.setattr(model_module, "GROUP_COST", 0)  # then each length is a group
    assert [g.tolist() for g in _length_groups(lengths)] == [[2, 8], [6], [1, 5], [4, 7]]
    monkeypatch.setattr(model_module, "GROUP_COST", 10**6)
    assert [g.tolist() for g in _length_groups(lengths)] == [[2, 8, 6, 1, 5, 4, 7]]
    assert _length_groups(np.zeros(3, np.int64)) == []


def test_length_groups_compute_what_one_run_computes_values_and_gradients(vocabs, monkeypatch):
    monkeypatch.setattr(model_module, "GROUP_COST", 0)  # a group for each length
    items = [f"i{k}" for k in range(1, 10)]
    table = request_table(
        [
            {"user_id": "u1", "query": "red mug", "rt_items": items[:n], "st_items": items[9 - m :]}
            for n, m in ((0, 2), (1, 0), (3, 6), (6, 1), (1, 2), (0, 0))
        ]
    )
    b = features.requests(table, vocabs, CFG, grow=False).batch(list(range(6)))
    model = model_for(vocabs)
    for grouped, plain, ids in (
        (model.real_time, model._real_time, b.rt),
        (model.short_term, model._short_term, b.st),
    ):
        Q = model.query_unit(b).detach().requires_grad_()
        model.zero_grad()
        ours = grouped(b, Q)
        ours.square().sum().backward()
        grads = [
            Q.grad.clone(),
            *(p.grad.clone() for p in model.parameters() if p.grad is not None),
        ]
        Q.grad = None
        model.zero_grad()
        theirs = plain(ids, Q)
        theirs.square().sum().backward()
        assert torch.allclose(ours, theirs, atol=1e-6)
        assert ours[(ids == PAD).all(1)].abs().max() == 0  # no history: zeros, never run
        expected = [Q.grad, *(p.grad for p in model.parameters() if p.grad is not None)]
        assert len(grads) == len(expected) > 1
        assert all(torch.allclose(g, e, atol=1e-6) for g, e in zip(grads, expected, strict=True))


def test_shortcuts_compute_what_the_plain_layers_compute(rows, vocabs):
    """The [CLS]-only fusion and pooling over distinct ids only skip work."""
    model = model_for(vocabs)
    b = features.requests(rows, vocabs, CFG, grow=False).batch([0, 1, 1, 0, 1])
    with torch.no_grad():
        x = torch.randn(3, fusion_tokens(CFG), CFG.dim)
        assert torch.allclose(_first_output(model.fusion, x), model.fusion(x)[:, 0], atol=1e-5)
        table, ids = model.emb["shop"], b.lt[:, 1]  # [B, actions, L]
        plain = F.embedding_bag(
            ids.reshape(-1, ids.shape[-1]), table.weight, mode="mean", padding_idx=PAD
        ).view(*ids.shape[:-1], -1)
        assert torch.allclose(_bag_mean(table, ids), plain, atol=1e-7)
    # With gradients on it pools over the distinct ids (a small sparse gradient): same means.
    assert torch.allclose(_bag_mean(table, ids), plain, atol=1e-7)


def test_batch_first_attention_is_torchs_on_valid_positions_values_and_gradients():
    """_self_attention (all positions querying, or the first few) and _pre_norm_layer against
    nn.MultiheadAttention and nn.TransformerEncoderLayer on the same weights: rows of every
    length, an empty one included."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        32, 4, dim_feedforward=64, dropout=0.0, batch_first=True, norm_first=True
    )
    x = torch.randn(4, 7, 32, requires_grad=True)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 3, 1, 0])[:, None]
    ignore = ~mask
    ignore[:, 0] = False  # as the model's _visible: an empty row keeps position 0
    attn = layer.self_attn
    for ours, theirs in (
        (lambda: _self_attention(attn, x, mask), lambda: attn(x, x, x, key_padding_mask=ignore)[0]),
        (lambda: _pre_norm_layer(layer, x, mask), lambda: layer(x, src_key_padding_mask=ignore)),
        (lambda: _self_attention(attn, x, queries=2), lambda: attn(x[:, :2], x, x)[0]),
    ):
        grads = []
        for f in (ours, theirs):
            out = f()
            valid = mask[:, : out.shape[1]]  # the query positions'
            (out * valid[..., None]).square().sum().backward()  # valid positions only
            grads.append((out[valid], x.grad.clone(), attn.in_proj_weight.grad.clone()))
            x.grad = None
            layer.zero_grad()
        for a, b in zip(*grads):
            assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_loss_masks_own_positive_and_hard_negatives_switch():
    torch.manual_seed(0)
    B, S, d = 4, 6, 8
    user, pos, neg = torch.randn(B, d), torch.randn(B, d), torch.randn(S, d)
    pos_ids = torch.tensor([10, 11, 10, 12])  # rows 0 and 2 share their positive item
    neg_ids = torch.tensor([11, 20, 21, 22, 23, 24])
    plain = ModelConfig(tau=2.0, hard_negatives=0)

    loss = retrieval_loss(user, pos, pos_ids, neg, neg_ids, plain)
    logits = user @ torch.cat([pos, neg]).T / 2.0
    own = torch.zeros(B, B + S, dtype=torch.bool)  # pool entries that are the row's own item
    own[0, 2] = own[2, 0] = own[1, B + 0] = True
    expected = F.cross_entropy(logits.masked_fill(own, float("-inf")), torch.arange(B))
    assert torch.allclose(loss, expected)

    gen = torch.Generator().manual_seed(0)
    with_hard = ModelConfig(tau=2.0, hard_negatives=3)
    hard = retrieval_loss(user, pos, pos_ids, neg, neg_ids, with_hard, gen)
    assert torch.isfinite(hard) and hard > loss  # extra near-positive terms in the denominator
    # N larger than the pool is capped; entries without a real negative are dropped, not NaN.
    huge = retrieval_loss(user, pos, pos_ids, neg, neg_ids, ModelConfig(hard_negatives=100), gen)
    assert torch.isfinite(huge)


def test_the_other_clicks_of_a_rows_request_are_masked_not_taught_as_negatives():
    torch.manual_seed(0)
    B, S, d = 4, 3, 8
    user, pos, neg = torch.randn(B, d), torch.randn(B, d), torch.randn(S, d)
    pos_ids = torch.tensor([10, 11, 12, 13])
    neg_ids = torch.tensor([11, 20, 21])
    requests = torch.tensor([0, 0, 1, 2])  # rows 0 and 1: two clicks of one request
    own = torch.eye(B, B + S, dtype=torch.bool)
    own[0, 1] = own[1, 0] = True  # the request's other click, in the batch
    own[0, B] = own[1, B] = True  # item 11, sampled: row 1's own item, row 0's sibling's
    logits = user @ torch.cat([pos, neg]).T / 2.0

    plain = ModelConfig(tau=2.0, hard_negatives=0)
    loss = retrieval_loss(user, pos, pos_ids, neg, neg_ids, plain, requests=requests)
    kept = own & ~torch.eye(B, B + S, dtype=torch.bool)  # the positive itself stays
    expected = F.cross_entropy(logits.masked_fill(kept, float("-inf")), torch.arange(B))
    assert torch.allclose(loss, expected)
    alone = retrieval_loss(user, pos, pos_ids, neg, neg_ids, plain)  # rows of four requests
    assert not torch.allclose(alone, expected)

    hinge = ModelConfig(loss="hinge", hinge_margin=1.0)
    positive = (user * pos).sum(-1, keepdim=True)
    pairs = (1.0 - positive + logits * 2.0).clamp(min=0)[~own]
    got = retrieval_loss(user, pos, pos_ids, neg, neg_ids, hinge, requests=requests)
    assert got.item() == pytest.approx(pairs.mean().item())


def test_log_q_comes_off_every_logit_and_a_constant_changes_nothing():
    torch.manual_seed(0)
    B, S, d = 4, 6, 8
    user, pos, neg = torch.randn(B, d), torch.randn(B, d), torch.randn(S, d)
    pos_ids, neg_ids = torch.arange(B), torch.arange(B, B + S)  # all distinct: nothing masked
    log_q = torch.rand(B + S) * 3
    plain = ModelConfig(tau=2.0, hard_negatives=0)
    loss = retrieval_loss(user, pos, pos_ids, neg, neg_ids, plain, log_q=log_q)
    logits = user @ torch.cat([pos, neg]).T / 2.0 - log_q
    assert torch.allclose(loss, F.cross_entropy(logits, torch.arange(B)))
    assert not torch.allclose(loss, retrieval_loss(user, pos, pos_ids, neg, neg_ids, plain))
    # The same correction for every item shifts every logit alike, the mixed hard negatives'
    # too (a mix of two equal corrections): the loss is the uncorrected one.
    with_hard = ModelConfig(tau=2.0, hard_negatives=3)
    losses = [
        retrieval_loss(
            user, pos, pos_ids, neg, neg_ids, with_hard, torch.Generator().manual_seed(1), q
        )
        for q in (None, torch.full((B + S,), 1.7))
    ]
    assert torch.allclose(*losses)


def test_loss_decreases_on_tiny_problem(rows, vocabs):
    titles = ["red cafe mug", "kettle", "tea", "pot"]
    corpus = pa.table({"item_id": ["i1", "i2", "i3", "i4"], "title": titles})
    items = features.items(corpus, vocabs, CFG, grow=True)
    model = model_for(vocabs).train()
    reqs = features.requests(rows, vocabs, CFG, grow=False).batch([0, 1])
    pos, neg = items.batch([0, 1]), items.batch([2, 3])
    cfg = ModelConfig(dim=CFG.dim, hard_negatives=2)
    opts = optimisers(model, lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(8):
        user = model.user_tower(reqs)
        loss = retrieval_loss(
            user, model.item_tower(pos), pos.item, model.item_tower(neg), neg.item, cfg, gen
        )
        assert torch.isfinite(loss)
        for opt in opts:
            opt.zero_grad()
        loss.backward()
        for opt in opts:
            opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.7


def test_lazy_adam_is_adam_per_row():
    """Each row moves as if it were its own parameter under torch's Adam, stepped only when a
    batch touched it (its bias correction counts its own steps, not the table's)."""
    torch.manual_seed(0)
    ours = nn.Embedding(10, 4, sparse=True)
    rows = [nn.Parameter(r.clone()) for r in ours.weight.detach()]
    opt = LazyAdam(ours.parameters(), lr=0.1)
    theirs = [torch.optim.Adam([r], lr=0.1) for r in rows]
    for ids in ([1, 2, 2, 5], [5, 7], [1, 2, 2, 5], [7]):  # repeats, rows left out of a step
        opt.zero_grad()
        ours(torch.tensor(ids)).pow(2).sum().backward()
        opt.step()
        for r in set(ids):
            theirs[r].zero_grad()
            sum(rows[i].pow(2).sum() for i in ids if i == r).backward()
            theirs[r].step()
    assert torch.allclose(ours.weight, torch.stack(rows), atol=1e-5)  # eps sits apart
    untouched = [0, 3, 4, 6, 8, 9]
    assert torch.equal(ours.weight[untouched], torch.stack(rows)[untouched])


def test_grow_from_keeps_old_rows_and_adds_new(rows, vocabs):
    old = model_for(vocabs, seed=1)
    grown_vocabs = Vocabs.from_json(vocabs.to_json())
    new_rows = request_table([{"user_id": "u-new", "query": "new words", "rt_items": ["i-new"]}])
    features.requests(new_rows, grown_vocabs, CFG, grow=True)
    new = model_for(grown_vocabs, seed=2)
    grow_from(new, old.state_dict())
    for name in ("user", "word", "item", "char1", "char2"):
        before, after = old.emb[name].weight, new.emb[name].weight
        assert len(after) > len(before)
        assert after[: len(before)].detach().numpy().tobytes() == before.detach().numpy().tobytes()
        assert after[len(before) :].abs().sum() > 0  # freshly initialised, not zero
    for name, tensor in old.state_dict().items():
        if not name.startswith("emb."):
            assert torch.equal(new.state_dict()[name], tensor)
    with pytest.raises(ValueError):
        grow_from(MGDSPR(ModelConfig(dim=16, max_words=5), vocabs.sizes()), old.state_dict())


def test_hinge_loss_by_hand_and_zero_once_margins_hold():
    # d = 1: scores are products. Row 0 (u=1, pos 1.0, item 10), row 1 (u=2, pos 0.5, item 11);
    # one sampled item 10 (0.5), which is row 0's own item.
    user, pos = torch.tensor([[1.0], [2.0]]), torch.tensor([[1.0], [0.5]])
    neg = torch.tensor([[0.5]])
    pos_ids, neg_ids = torch.tensor([10, 11]), torch.tensor([10])
    cfg = ModelConfig(loss="hinge", hinge_margin=1.0)
    # max(0, 1 - s(pos) + s(neg)) per pair:
    # row 0: s(pos) = 1; negatives: row 1's positive (0.5)            -> 0.5
    # row 1: s(pos) = 1; negatives: row 0's positive (2), item 10 (1) -> 2 and 1
    expected = (0.5 + 2.0 + 1.0) / 3
    loss = retrieval_loss(user, pos, pos_ids, neg, neg_ids, cfg)
    assert loss.item() == pytest.approx(expected)
    # No temperature, no hard-negative mixing: tau and hard_negatives change nothing.
    other = replace(cfg, tau=5.0, hard_negatives=3)
    assert retrieval_loss(user, pos, pos_ids, neg, neg_ids, other).item() == pytest.approx(expected)
    assert retrieval_loss(user, pos, pos_ids, neg, neg_ids, replace(cfg, loss="softmax")) != loss
    # Every positive ahead of every negative by more than the margin: nothing left to learn.
    user = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    pos, neg = 3 * torch.eye(2), torch.zeros(1, 2)
    neg_ids = torch.tensor([12])
    satisfied = retrieval_loss(user, pos, pos_ids, neg, neg_ids, cfg)
    satisfied.backward()
    assert satisfied.item() == 0 and user.grad.abs().sum() == 0
    # ... and a margin wider than the gap (3) brings the loss back.
    assert retrieval_loss(user, pos, pos_ids, neg, neg_ids, replace(cfg, hinge_margin=4.0)) > 0


VARIANTS = {
    "mgdspr": {},
    "words-only": {"query_unit": "words"},
    "query-only": {"personalised": False},
    "two-tower-hinge": {"query_unit": "words", "personalised": False, "loss": "hinge"},
}


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_trains_a_step_with_all_its_parameters(name, rows, vocabs):
    cfg = replace(CFG, **VARIANTS[name])
    corpus = pa.table({"item_id": ["i1", "i2", "i3"], "title": ["red mug", "kettle", "tea pot"]})
    items = features.items(corpus, vocabs, cfg, grow=True)
    torch.manual_seed(0)
    model = MGDSPR(cfg, vocabs.sizes()).train()
    b = features.requests(rows, vocabs, cfg, grow=False).batch([0, 1])
    units = {"mgdspr": 6, "words-only": 1, "query-only": 5, "two-tower-hinge": 1}[name]
    assert query_units(cfg) == units and model.query_unit(b).shape == (2, units, cfg.dim)
    pos, neg = items.batch([0, 1]), items.batch([2])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opts = optimisers(model, lr=1e-2)
    loss = retrieval_loss(
        model.user_tower(b), model.item_tower(pos), pos.item, model.item_tower(neg), neg.item, cfg
    )
    loss.backward()
    # No module is built that the variant never reads: every parameter gets a gradient.
    unused = [k for k, p in model.named_parameters() if p.grad is None]
    assert unused == []
    for opt in opts:
        opt.step()
    assert torch.isfinite(loss) and not torch.equal(before["fusion_pos"], model.fusion_pos)
    # Warm starts work between models of the same variant, and refuse another variant.
    same = MGDSPR(cfg, vocabs.sizes())
    grow_from(same, model.state_dict())
    assert all(torch.equal(v, same.state_dict()[k]) for k, v in model.state_dict().items())
    if name != "mgdspr":
        with pytest.raises(ValueError):
            grow_from(MGDSPR(CFG, vocabs.sizes()), model.state_dict())


def test_transformer_unit_dropout_zeroes_the_unit_of_that_share_of_rows_in_training_only(vocabs):
    table = request_table([{"user_id": "u1", "query": f"red mug {k}"} for k in range(400)])
    b = features.requests(table, vocabs, CFG, grow=False).batch(list(range(400)))
    torch.manual_seed(0)
    model = MGDSPR(replace(CFG, transformer_unit_dropout=0.25), vocabs.sizes())
    SEQ, MIX = 3, 5  # Q's units: 1-gram, 2-gram, words, Transformer, past queries, mix
    with torch.no_grad():
        kept = model.eval().query_unit(b)
        dropped = model.train().query_unit(b)
    assert (kept[:, SEQ].abs().sum(1) > 0).all()  # inference: every row keeps it
    gone = (dropped[:, SEQ] == 0).all(1)
    assert 0.18 < gone.float().mean() < 0.32
    # Gone from the mix too; every other unit, and the rows that keep it, are untouched.
    assert torch.allclose(dropped[gone, MIX], kept[gone, MIX] - kept[gone, SEQ], atol=1e-5)
    assert torch.equal(dropped[~gone], kept[~gone])
    assert torch.equal(dropped[:, :SEQ], kept[:, :SEQ])


def test_words_only_builds_no_char_tables_or_word_transformer(vocabs):
    words = MGDSPR(replace(CFG, query_unit="words"), vocabs.sizes())
    full = MGDSPR(CFG, vocabs.sizes())
    assert set(full.emb) - set(words.emb) == {"char1", "char2"}
    assert not hasattr(words, "word_encoder") and hasattr(full, "word_encoder")
    assert words.fusion_pos.shape == (1 + 1 + 3 + 1, CFG.dim)  # [CLS], q_seg, 3 readouts, user
    query_only = MGDSPR(replace(CFG, personalised=False), vocabs.sizes())
    assert set(query_only.emb) == {"word", "item", "char1", "char2"}
    assert not hasattr(query_only, "rt_lstm") and query_only.fusion_pos.shape == (1 + 5, CFG.dim)


def test_without_personalisation_only_the_query_matters():
    history = {
        "rt_items": ["i1", "i2"],
        "st_items": ["i3"],
        "past_queries": ["blue mug"],
        "lt_click_item": ["i1"],
        "lt_cart_shop": ["s1"],
    }
    table = request_table(
        [
            {"user_id": "u1", "query": "red mug", **history},
            {"user_id": "u2", "query": "red mug"},  # another user, no behaviour at all
            {"user_id": "u1", "query": "green kettle", **history},  # same user, another query
        ]
    )
    v = Vocabs()
    features.requests(table, v, CFG, grow=True)
    for personalised in (False, True):
        torch.manual_seed(0)
        model = MGDSPR(replace(CFG, personalised=personalised), v.sizes()).eval()
        with torch.no_grad():
            out = model.user_tower(features.requests(table, v, CFG, grow=False).batch([0, 1, 2]))
        assert not torch.allclose(out[0], out[2], atol=1e-4)  # the query always counts
        assert torch.allclose(out[0], out[1], atol=1e-6) == (not personalised)


def test_config_rejects_unknown_variants():
    with pytest.raises(ValueError, match="query_unit"):
        ModelConfig(query_unit="chars")
    with pytest.raises(ValueError, match="loss"):
        ModelConfig(loss="bpr")
    with pytest.raises(ValueError, match="validation_share"):
        ModelConfig(validation_share=1.0)
    with pytest.raises(ValueError, match="min_validation"):
        ModelConfig(min_validation=0)
    assert ModelConfig(query_unit="words", loss="hinge").loss == "hinge"


@pytest.mark.parametrize("name", ["mgdspr", "words-only", "query-only"])
def test_exported_query_encoder_encodes_as_the_model_does(name, rows, vocabs, tmp_path):
    """The program services load (training/export.py, ebr/query_encoder.py) against the eager user
    tower: a full history, none at all, a single request, and lengths the export never saw."""
    cfg = replace(CFG, **VARIANTS[name])
    torch.manual_seed(0)
    model = MGDSPR(cfg, vocabs.sizes()).eval()
    meta = {"version": 1, "ds": "2026-01-01", "parent": None, "metrics": {}}
    saved = Artifact(model, vocabs, cfg, meta).save(tmp_path, 1, "2026-01-01")
    export_query_encoder(saved.model, saved.path)
    encoder = load_query_encoder(saved.path)

    longer = request_table(
        [
            {
                "user_id": "u1",
                "query": "red mug tea kettle teapot",
                "rt_items": ["i1", "i2", "i3"],
                "st_items": ["i7", "i8", "i9", "i1", "i2"],
                "past_queries": ["a", "b c d", "tea"],
            }
        ]
    )
    for table in (rows, rows.slice(0, 1), rows.slice(1, 1), longer):
        expected = saved.encode_requests(table)
        assert expected.shape == (len(table), cfg.dim)
        np.testing.assert_allclose(encoder.encode(table), expected, atol=1e-5)
    assert encoder.version == 1 and encoder.encode(rows.slice(0, 0)).shape == (0, cfg.dim)
