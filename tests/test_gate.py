import pytest

from indexing.gate import decide, recall_at_k


def test_recall_at_k_against_hand_computed_values():
    retrieved = [["a", "b", "c", "d"], ["x", "y", "z", "w"], ["q"]]
    relevant = [["b", "d"], ["w"], []]  # the empty request is skipped
    r = recall_at_k(retrieved, relevant, (1, 2, 4))
    # request 1: top1 0/2, top2 1/2, top4 2/2; request 2: 0, 0, 1
    assert r[1] == pytest.approx(0.0)
    assert r[2] == pytest.approx((0.5 + 0) / 2)
    assert r[4] == pytest.approx((1 + 1) / 2)


def test_first_run_is_judged_by_the_floor_alone():
    assert decide(0.30, None, floor=0.2, margin=0.02, k=50) == []
    assert "below the floor" in decide(0.10, None, floor=0.2, margin=0.02, k=50)[0]


def test_regression_beyond_the_margin_is_refused():
    assert decide(0.29, 0.30, floor=0.2, margin=0.02, k=50) == []
    reasons = decide(0.27, 0.30, floor=0.2, margin=0.02, k=50)
    assert len(reasons) == 1 and "regresses" in reasons[0]
    assert len(decide(0.10, 0.30, floor=0.2, margin=0.02, k=50)) == 2
