import math

import pytest

from evaluation.metrics import mean_se, ndcg_at_k, recall_at_k, relevance_rate_at_k


def test_recall_counts_relevant_items_in_the_top_k_and_skips_requests_with_none():
    retrieved = [["a", "b", "c"], ["x"], ["a"], ["y", "z"]]
    relevant = [{"a", "c", "d"}, set(), ["z"], ["z"]]
    assert recall_at_k(retrieved, relevant, 2) == [pytest.approx(1 / 3), None, 0.0, 1.0]
    assert recall_at_k(retrieved, relevant, 3) == [pytest.approx(2 / 3), None, 0.0, 1.0]
    assert recall_at_k(retrieved, relevant, 1) == [pytest.approx(1 / 3), None, 0.0, 0.0]


def test_lengths_must_agree():
    with pytest.raises(ValueError):
        recall_at_k([["a"]], [], 1)


def test_mean_se_uses_the_sample_std_and_ignores_undefined_values():
    # mean 5; squared deviations 9+1+1+1+0+0+4+16 = 32; var 32/7; se sqrt(32/7/8) = sqrt(4/7)
    mean, se = mean_se([2, 4, None, 4, 4, 5, 5, 7, 9])
    assert mean == pytest.approx(5.0)
    assert se == pytest.approx(math.sqrt(4 / 7))
    assert mean_se([0.25, None]) == (0.25, 0.0)
    mean, se = mean_se([None])
    assert math.isnan(mean) and se == 0.0


def test_relevance_rate_counts_only_good_grades_over_k():
    grades = [{"a": 4, "b": 3, "d": 4}]
    # "c" is unjudged (not good); only three items for k=4: the gap is a miss
    assert relevance_rate_at_k([["a", "b", "c"]], grades, 4) == [0.25]
    assert relevance_rate_at_k([["a", "d", "c"]], grades, 2) == [1.0]
    assert relevance_rate_at_k([["b", "c"]], grades, 2) == [0.0]
    assert relevance_rate_at_k([["b", "c"]], grades, 2, good=3) == [0.5]


def test_ndcg_by_hand():
    grades = [{"a": 4, "b": 2, "c": 3}]
    # gains: b 2^1-1 = 1, a 2^3-1 = 7, x unjudged 0; ideal order a, c, b: 7, 3, 1
    dcg = 1 / math.log2(2) + 7 / math.log2(3)
    ideal = 7 / math.log2(2) + 3 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k([["b", "a", "x"]], grades, 3) == [pytest.approx(dcg / ideal)]
    assert ndcg_at_k([["a", "c", "b"]], grades, 3) == [pytest.approx(1.0)]
    # k=1: the ideal is the single best item
    assert ndcg_at_k([["c"]], grades, 1) == [pytest.approx(3 / 7)]


def test_ndcg_is_zero_without_gain():
    # grade 1 gains nothing, so a query judged only 1 has an ideal of 0
    assert ndcg_at_k([["a"], []], [{"a": 1}, {"b": 4}], 5) == [0.0, 0.0]
