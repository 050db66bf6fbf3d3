"""Title queries: pseudo-requests written from catalogue titles, mixed into a day's training rows.

Clicks teach the towers only the words of queries and items that someone clicked. A word found
only in titles of items no one has clicked meets training only inside sampled negatives, so
its embedding learns "never clicked" and a new query using it retrieves the wrong items: on
CrowdFlower's held-out queries, whose products are never clicked in training, MGDSPR found
0.001 of the relevant products in its top 10 (BM25 0.33). A title query is a short window of an
item's own title, asked by a user with no id and no history, with that item as the click: every
item's words then also meet training as a positive, and the unknown-user row (UNK) that serves
every new user is trained.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import text
from .features import REQUEST_COLUMNS

MAX_WORDS = 4  # real queries are short: Best Buy's have 2-3 words, titles 10 or more


def title_queries(
    examples: pa.Table, corpus: pa.Table, share: float, seed: int, rounds: int = 1
) -> tuple[pa.Table, np.ndarray]:
    """examples (REQUEST_COLUMNS and item_id) followed by `rounds` rounds of title queries, and
    each title query's round. A round holds as many as `share` of the examples: first the corpus
    items no example clicked, as many of them as fit, then items drawn from the whole corpus;
    each part at random, every item once before any item twice (across rounds too). A query is 1
    to MAX_WORDS consecutive words of the item's title.

    Unclicked items in every round: clicks already teach the words of the items they click, and
    title queries are what teaches the rest. Where most of a catalogue is never clicked, uniform
    rounds spend most rows on clicked items (CrowdFlower: 4,593 of 9,913 items unclicked, a
    round of 7,835 rows at share 0.5); docs/quality.md has the figures of this and the ways
    tried before it.

    Training takes one round an epoch: every epoch then teaches other items' words, and other
    windows of a title, at the cost of one round."""
    columns = [*REQUEST_COLUMNS, "item_id"]
    examples = examples.select(columns)
    per_round = int(share * examples.num_rows) if corpus.num_rows else 0
    n = per_round * rounds
    if n == 0:
        return examples, np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    clicked = pc.is_in(corpus.column("item_id"), value_set=examples.column("item_id"))
    unclicked = np.flatnonzero(~clicked.to_numpy(zero_copy_only=False))
    first = min(len(unclicked), per_round)
    parts = [
        np.resize(rng.permutation(pool), rounds * size).reshape(rounds, size)
        for pool, size in ((unclicked, first), (np.arange(corpus.num_rows), per_round - first))
    ]
    # Sorted within a round: takes from the corpus then read it in order.
    drawn = np.concatenate(parts, axis=1)
    pick = pa.array(np.sort(drawn, axis=1).ravel())
    words = text.word_lists(corpus.column("title").take(pick).combine_chunks(), limit=64)
    offsets = words.offsets.to_numpy().astype(np.int64)
    lens = np.diff(offsets)
    size = np.minimum(lens, rng.integers(1, MAX_WORDS + 1, n))
    start = offsets[:-1] - offsets[0] + (rng.random(n) * (lens - size + 1)).astype(np.int64)
    window = pa.ListArray.from_arrays(
        pa.array(text.list_offsets(size)),
        words.values.take(pa.array(text.ranges(start, size))),
    )
    rows = {
        "user_id": pa.array([""] * n, pa.string()),  # read as UNK, the unknown user
        "query": pc.binary_join(window, " "),
        "item_id": corpus.column("item_id").take(pick),
    }
    schema = examples.schema
    queries = pa.table(
        {
            f.name: rows[f.name].cast(f.type)
            if f.name in rows
            else pa.array([[]] * n, f.type)  # no history: every other column is a list
            for f in schema
        },
        schema=schema,
    )
    has_words = size > 0  # an empty title gives no query
    round_of = np.arange(n) // per_round
    return (
        pa.concat_tables([examples, queries.filter(pa.array(has_words))]),
        round_of[has_words],
    )
