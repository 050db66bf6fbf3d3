"""MGDSPR building blocks: text, vocabularies, features, towers, loss, warm-start growth."""

import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from ebr.settings import ModelConfig
from training import features, text
from training.features import LT_COLUMNS
from training.model import MGDSPR, attend, grow_from, retrieval_loss
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


def test_text_normalises_and_segments():
    assert text.words("Red Café  Mug, 2x!") == ("red", "cafe", "mug", "2x")
    assert text.words("ＲＥＤ mug") == ("red", "mug")  # full-width folds to ASCII
    unigrams, bigrams = text.char_ngrams("Tea Cup")
    assert unigrams == tuple("teacup")
    assert bigrams == ("te", "ea", "cu", "up")  # no pair across the space


def test_vocab_grows_appends_and_round_trips():
    v = Vocabs()
    assert v.item.encode(["a", "b", "a"], grow=True) == [2, 3, 2]
    assert v.item.encode(["a", "new"], grow=False) == [2, UNK]
    assert v.brand.add("") == UNK  # "" brand is unknown, not a token
    assert len(v.item) == 4 and v.sizes()["item"] == 4
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
    assert encoded.user == [UNK] and encoded.words == [[UNK]] and vocabs.sizes() == sizes
    # DuckDB may hand over pandas (list cells as numpy arrays): same features.
    assert features.requests(rows.to_pandas(), vocabs, CFG, grow=False) == reqs


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


def test_loss_decreases_on_tiny_problem(rows, vocabs):
    titles = ["red cafe mug", "kettle", "tea", "pot"]
    corpus = pa.table({"item_id": ["i1", "i2", "i3", "i4"], "title": titles})
    items = features.items(corpus, vocabs, CFG, grow=True)
    model = model_for(vocabs).train()
    reqs = features.requests(rows, vocabs, CFG, grow=False).batch([0, 1])
    pos, neg = items.batch([0, 1]), items.batch([2, 3])
    cfg = ModelConfig(dim=CFG.dim, hard_negatives=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(8):
        user = model.user_tower(reqs)
        loss = retrieval_loss(
            user, model.item_tower(pos), pos.item, model.item_tower(neg), neg.item, cfg, gen
        )
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.7


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
