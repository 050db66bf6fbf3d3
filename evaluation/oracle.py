"""What the synthetic marketplace's hidden user preferences are worth: two rankings that read them.

The generator (ebr.synthetic) shows each request the lexical engine's top ten (query words found
in the title, ties at random) and its user clicks among those, more often on items of their
preferred brand tier. Two rankings of the corpus reread that:

- ENGINE ranks as the engine does: by query words found in the title, ties at random;
- ENGINE_AND_TIER breaks the same ties by the user's true preferred tier first.

Both use the same random ties, so their difference is what knowing the user's preference adds to
the query alone at each K: the room a personalised model has over a query-only one on these days.
The same hidden state splits the test requests (tier_subsets) into those whose clicks are all of
the user's preferred tier, where a personalised model can gain, and those with none of it, where
leaning toward the tier can only cost; and it says how far any ranking leans toward the tier
(tier_share).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from ebr.synthetic import brand_tiers

ENGINE = "oracle: engine"
ENGINE_AND_TIER = "oracle: engine + true tier"
PREFERRED_TIER = "clicks of the user's tier"
OTHER_TIERS = "clicks of other tiers"


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


def tier_subsets(test: pa.Table, seed: int) -> dict[str, list[bool]]:
    """{PREFERRED_TIER: requests every click of which is of the user's preferred tier,
    OTHER_TIERS: requests none of whose clicks is}; requests with both are in neither."""
    preferred, _ = brand_tiers(seed, test.column("user_id").to_pylist(), [])
    known, liked = _of_user_tier(seed, preferred, test.column("clicked_items").to_pylist())
    return {
        PREFERRED_TIER: [bool(len(m) and m.all()) for m in liked],
        OTHER_TIERS: [bool(len(m) and k.all() and not m.any()) for k, m in zip(known, liked)],
    }


def tier_share(test: pa.Table, seed: int, k: int) -> Callable[[list[list[str]]], list[float]]:
    """A measure of rankings of test's requests: per request, the share of the top k that is of
    the user's preferred tier (items the generator did not write count as not)."""
    preferred, _ = brand_tiers(seed, test.column("user_id").to_pylist(), [])

    def measure(retrieved: list[list[str]]) -> list[float]:
        _, liked = _of_user_tier(seed, preferred, [items[:k] for items in retrieved])
        return [float(m.mean()) if len(m) else 0.0 for m in liked]

    return measure


def _of_user_tier(
    seed: int, preferred: np.ndarray, lists: list[list[str]]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per request, a mask over its list of item ids: which the generator wrote (of a user it
    wrote too), and which of those are of the request's user's preferred tier."""
    counts = [len(items) for items in lists]
    _, tier = brand_tiers(seed, [], [item for items in lists for item in items])
    user_tier = np.repeat(preferred, counts)
    known = (tier >= 0) & (user_tier >= 0)
    cuts = np.cumsum(counts)[:-1]
    return np.split(known, cuts), np.split(known & (tier == user_tier), cuts)
