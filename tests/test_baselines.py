import numpy as np
import pyarrow as pa

from evaluation.baselines import BM25, Memorisation, MiniLM, Popularity, normalised
from indexing import exact
from indexing.exact import exact_top_k

CORPUS = pa.table(
    {
        "item_id": ["a", "b", "c", "d", "e"],
        "title": [
            "Garden hose 50 ft",
            "Wireless mouse",
            "Gaming laptop 15 inch",
            "Red running shoes",
            "Leather boots",
        ],
    }
)


def _clicks(pairs: list[tuple[str, str]]) -> pa.Table:
    return pa.table({"query": [q for q, _ in pairs], "item_id": [i for _, i in pairs]})


# b clicked 3 times, a and c twice (tie: a first by id), z is not in the corpus
CLICKS = _clicks(
    [
        ("mouse", "b"),
        ("mouse", "b"),
        ("mouse", "b"),
        ("hose", "a"),
        ("hose", "a"),
        ("laptop", "c"),
        ("laptop", "c"),
        ("old", "z"),
        ("old", "z"),
        ("old", "z"),
        ("old", "z"),
    ]
)


def test_popularity_orders_by_clicks_then_the_rest_of_the_corpus():
    ranker = Popularity()
    ranker.fit(CLICKS, CORPUS)
    assert ranker.rank(["anything", "else"], 4) == [["b", "a", "c", "d"]] * 2
    assert ranker.rank(["q"], 10) == [["b", "a", "c", "d", "e"]]


def test_memorisation_uses_the_normalised_query_and_backs_off_to_popularity():
    clicks = pa.concat_tables(
        [
            CLICKS,
            _clicks(
                [("Red Shoes", "d"), ("red  shoes!", "d"), ("red shoes", "e"), ("RED SHOES", "b")]
            ),
        ]
    )
    ranker = Memorisation()
    ranker.fit(clicks, CORPUS)
    assert normalised(["  Red   SHOES! ", "Call of Duty: MW3"]) == ["red shoes", "call of duty mw3"]
    # d twice, then b and e once (ties by id), then popularity without repeating b
    assert ranker.rank(["red shoes"], 4) == [["d", "b", "e", "a"]]
    assert ranker.rank(["Red, Shoes"], 2) == [["d", "b"]]
    assert ranker.rank(["never searched"], 3) == [["b", "a", "c"]]


def test_bm25_ranks_the_matching_title_first_and_returns_only_matches():
    ranker = BM25()
    ranker.fit(CLICKS, CORPUS)
    assert ranker.rank(["LAPTOP for gaming"], 3)[0][0] == "c"
    assert sorted(ranker.rank(["red boots"], 5)[0]) == ["d", "e"]  # one word each, nothing else
    assert ranker.rank(["leather"], 5) == [["e"]]
    assert ranker.rank(["zzz", ""], 5) == [[], []]


def test_exact_top_k_orders_by_inner_product(monkeypatch):
    items = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    queries = np.array([[1.0, 0.1], [0.0, -1.0], [0.5, 0.6]])
    monkeypatch.setattr(exact, "SCORES", 6)  # blocks of 2 queries: the last block holds one
    got = exact_top_k(queries, items, ["x", "y", "z"], 2)
    assert got == [["x", "z"], ["x", "z"], ["z", "y"]]
    assert exact_top_k(queries[:1], items, ["x", "y", "z"], 10) == [["x", "z", "y"]]


def test_exact_top_k_in_two_levels_is_torch_topk(monkeypatch):
    import torch

    rng = np.random.default_rng(0)
    # 1,003 items: 15 whole groups of 64 and a tail of 43; the winners crowd into few groups.
    items = rng.standard_normal((1003, 8)).astype(np.float32)
    items[130:140] *= 5  # ten strong items in group 2
    items[1000:] *= 4  # three in the tail
    queries = rng.standard_normal((50, 8)).astype(np.float32)
    for k in (1, 10, 14):
        rows, scores = exact.top_k(queries, items, k, device="cpu")
        want = torch.topk(torch.from_numpy(queries @ items.T), k, dim=1)
        np.testing.assert_array_equal(rows, want.indices.numpy())
        np.testing.assert_allclose(scores, want.values.numpy(), rtol=1e-5)
    # With no more groups than k it is torch.topk itself.
    monkeypatch.setattr(exact, "GROUP", 100)
    rows, _ = exact.top_k(queries, items, 10, device="cpu")
    np.testing.assert_array_equal(rows, torch.topk(torch.from_numpy(queries @ items.T), 10).indices)


def test_exact_top_k_over_chunks_of_items_is_torch_topk(monkeypatch):
    import torch

    rng = np.random.default_rng(1)
    items = rng.standard_normal((1003, 8)).astype(np.float32)
    items[990:] *= 4  # the winners in the last, short chunk
    queries = rng.standard_normal((50, 8)).astype(np.float32)
    want = torch.topk(torch.from_numpy(queries @ items.T), 300, dim=1)
    whole, _ = exact.top_k(queries, items, 300, device="cpu")
    # chunks of 130 items (two groups of 64 and a tail), blocks of 3 queries: k over a chunk too
    monkeypatch.setattr(exact, "WIDE", 10**9)
    monkeypatch.setattr(exact, "CHUNK", 130)
    monkeypatch.setattr(exact, "SCORES", 400)
    for k in (1, 10, 14, 300):
        rows, scores = exact.top_k(queries, items, k, device="cpu")
        np.testing.assert_array_equal(rows, want.indices[:, :k].numpy())
        np.testing.assert_allclose(scores, want.values[:, :k].numpy(), rtol=1e-5)
    np.testing.assert_array_equal(whole, want.indices.numpy())
    assert exact.top_k(queries, items[:0], 5, device="cpu")[0].shape == (50, 0)


def test_minilm_puts_synonyms_closer_than_unrelated_titles():
    corpus = pa.table({"item_id": ["hose", "pc"], "title": ["garden hose", "notebook pc"]})
    ranker = MiniLM()
    ranker.fit(_clicks([]), corpus)
    assert ranker.rank(["laptop computer"], 2) == [["pc", "hose"]]
