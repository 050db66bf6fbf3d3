"""The synthetic oracles: rankings that read the generator's hidden brand preferences."""

from datetime import date

import numpy as np
import pyarrow as pa
import pytest

from ebr import synthetic
from evaluation import report
from evaluation.oracle import (
    ENGINE,
    ENGINE_AND_TIER,
    OTHER_TIERS,
    PREFERRED_TIER,
    rankings,
    tier_share,
    tier_subsets,
)

DAY = date(2026, 1, 1)
SEED = 3


def test_brand_tiers_are_the_generators_own_and_unknown_ids_get_none():
    people = synthetic.users(SEED, 40)
    items = synthetic.catalogue(SEED, 60)
    preferred, tier = synthetic.brand_tiers(
        SEED, ["u39", "u0", "", "x5", "u"], ["i59", "i3", "item", "u1"]
    )
    assert preferred.tolist() == [people.brands[39], people.brands[0], -1, -1, -1]
    assert tier.tolist() == [items.brand[59], items.brand[3], -1, -1]


def test_the_true_tier_reorders_only_items_that_match_the_query_equally():
    events, corpus = synthetic.generate_day(DAY, DAY, synthetic.PROFILES["tiny"], SEED)
    requests = events.filter(pa.compute.equal(events["event_type"], "impression"))
    test = requests.group_by(["request_id", "user_id", "query"]).aggregate([]).slice(0, 30)
    k = 40
    got = rankings(test, corpus, SEED, k)
    titles = dict(zip(corpus["item_id"].to_pylist(), corpus["title"].to_pylist()))
    preferred, tier = synthetic.brand_tiers(
        SEED, test["user_id"].to_pylist(), corpus["item_id"].to_pylist()
    )
    tier_of = dict(zip(corpus["item_id"].to_pylist(), tier))
    reordered = 0
    for row, (query, engine, personal) in enumerate(
        zip(test["query"].to_pylist(), got[ENGINE], got[ENGINE_AND_TIER])
    ):
        words = set(query.split())

        def matched(item, words=words):
            return len(words & set(titles[item].split()))

        # The engine's order: most query words first; the tier only breaks its ties.
        assert [matched(i) for i in engine] == sorted((matched(i) for i in engine), reverse=True)
        keys = [(-matched(i), tier_of[i] != preferred[row]) for i in personal]
        assert keys == sorted(keys)
        assert len(set(personal)) == len(personal) == k
        reordered += engine != personal
    assert reordered > 0  # the preference changed some rankings: the test can see a no-op
    assert np.isin(preferred, np.arange(synthetic.TIERS)).all()


def test_tier_subsets_split_requests_by_whether_their_clicks_are_of_the_users_tier():
    people = synthetic.users(SEED, 10)
    items = synthetic.catalogue(SEED, 200)
    user = "u4"
    liked = [f"i{i}" for i in np.flatnonzero(items.brand == people.brands[4])[:2]]
    other = [f"i{i}" for i in np.flatnonzero(items.brand != people.brands[4])[:2]]
    test = pa.table(
        {
            "user_id": [user, user, user, user, "", user],
            "clicked_items": [liked, other, [liked[0], other[0]], [], liked, [liked[0], "x9"]],
        }
    )
    got = tier_subsets(test, SEED)
    # All of the tier; none of it; both (neither subset); no clicks; an unknown user; an
    # unknown item beside a liked one (not all of the tier, and not known to be none of it).
    assert got[PREFERRED_TIER] == [True, False, False, False, False, False]
    assert got[OTHER_TIERS] == [False, True, False, False, False, False]


def test_the_synthetic_target_splits_its_gap_by_the_tier_of_the_clicks():
    def figures(overall: float, liked: float, other: float) -> dict:
        return {
            "recall": {50: (overall, 0.01)},
            f"recall: {PREFERRED_TIER}": {50: (liked, 0.02)},
            f"recall: {OTHER_TIERS}": {50: (other, 0.02)},
        }

    methods = {
        "mgdspr": figures(0.88, 0.94, 0.84),
        "mgdspr-query-only": figures(0.89, 0.93, 0.86),
        ENGINE: figures(0.89, 0.95, 0.85),
        ENGINE_AND_TIER: figures(0.90, 0.99, 0.84),
    }
    (target,) = report.targets({"synthetic": {"methods": methods}})
    assert target["gap"] == pytest.approx(-0.01)
    assert (
        f"on {PREFERRED_TIER} mgdspr 0.9400 ± 0.0200 vs query-only 0.9300 ± 0.0200 (+0.0100; "
        "the true preference +0.0400); "
        f"on {OTHER_TIERS} mgdspr 0.8400 ± 0.0200 vs query-only 0.8600 ± 0.0200 (-0.0200; "
        "the true preference -0.0100)"
    ) in target["note"]


def test_tier_share_is_the_share_of_the_top_k_of_the_users_tier():
    people = synthetic.users(SEED, 10)
    items = synthetic.catalogue(SEED, 200)
    liked = [f"i{i}" for i in np.flatnonzero(items.brand == people.brands[4])[:2]]
    other = [f"i{i}" for i in np.flatnonzero(items.brand != people.brands[4])[:2]]
    test = pa.table({"user_id": ["u4", "u4", "u4", "u4", "x"]})
    measure = tier_share(test, SEED, k=2)
    # Half; the top 2 only (the third item is past k); an unknown item; no items; unknown user.
    got = measure([[liked[0], other[0]], [*liked, other[0]], ["x9", other[1]], [], liked])
    assert got == [0.5, 1.0, 0.0, 0.0, 0.0]
