"""What the synthetic marketplace's hidden user preferences are worth: two rankings that read them.

The generator (ebr.synthetic) shows each request the lexical engine's top ten (query words found
in the title, ties at random) and its user clicks among those, more often on items of their
preferred brand tier. Two rankings of the corpus reread that:

- ENGINE ranks as the engine does: by query words found in the title, ties at random;
- ENGINE_AND_TIER breaks the same ties by the user's true preferred tier first.

Both use the same random ties, so their difference is what knowing the user's preference adds to
the query alone at each K: the room a personalised model has over a query-only one on these days.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ebr.synthetic import brand_tiers

ENGINE = "oracle: engine"
ENGINE_AND_TIER = "oracle: engine + true tier"


def rankings(test: pa.Table, corpus: pa.Table, seed: int, k: int) -> dict[str, list[list[str]]]:
    """{ENGINE: top k item ids per test request, ENGINE_AND_TIER: the same with the preference}."""
    titles = corpus.column("title").to_pylist()
    item_ids = np.array(corpus.column("item_id").to_pylist(), dtype=object)
    postings: dict[str, list[int]] = {}
    for row, title in enumerate(titles):
        for word in set(title.split()):  # the engine's words: split on spaces, as written
            postings.setdefault(word, []).append(row)
    preferred, tier = brand_tiers(seed, test.column("user_id").to_pylist(), item_ids)
    rng = np.random.default_rng(seed)
    out: dict[str, list[list[str]]] = {ENGINE: [], ENGINE_AND_TIER: []}
    for query, user_tier in zip(test.column("query").to_pylist(), preferred):
        matched = np.zeros(len(titles))
        for word in set(query.split()):
            matched[postings.get(word, [])] += 1
        ties = rng.random(len(titles))
        # Below one word: the preference only reorders items that match equally well.
        liked = (tier == user_tier) & (user_tier >= 0)
        for name, score in ((ENGINE, matched), (ENGINE_AND_TIER, matched + 0.5 * liked)):
            out[name].append(item_ids[np.lexsort((ties, -score))[:k]].tolist())
    return out
