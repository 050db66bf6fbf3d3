import hashlib
from dataclasses import replace

import duckdb
import pytest

from ebr.settings import load_settings
from indexing.gate import decide, read_gate_sample, recall_at_k


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


def test_the_gate_scores_a_fixed_uniform_sample_of_the_days_held_out_requests(settings):
    con = duckdb.connect(str(settings.warehouse))
    con.execute(
        "create table mart_eval_examples as select cast(d as date) as ds, "
        "'r' || lpad(cast(k as varchar), 3, '0') as request_id, k as n "
        "from (values ('2026-01-01'), ('2026-01-02')) as t(d), range(30) as r(k)"
    )
    con.close()
    settings = replace(settings, gate_requests=10)

    sample, held_out = read_gate_sample("2026-01-02", settings)

    ids = [f"r{k:03d}" for k in range(30)]
    lowest = sorted(ids, key=lambda i: int(hashlib.md5(i.encode()).hexdigest(), 16))[:10]
    assert held_out == 30 and sample.column("request_id").to_pylist() == lowest
    assert lowest != ids[:10]  # not simply the first ids: a sample over the whole evening
    assert {str(d) for d in sample.column("ds").to_pylist()} == {"2026-01-02"}
    assert read_gate_sample("2026-01-02", settings)[0].equals(sample)  # a rerun scores the same
    everything, _ = read_gate_sample("2026-01-02", replace(settings, gate_requests=100))
    assert sorted(everything.column("request_id").to_pylist()) == ids


def test_gate_requests_is_read_from_the_environment_and_must_be_positive(monkeypatch, tmp_path):
    monkeypatch.setenv("EBR_HOME", str(tmp_path))
    monkeypatch.setenv("EBR_GATE_REQUESTS", "2500")
    assert load_settings().gate_requests == 2500
    monkeypatch.setenv("EBR_GATE_REQUESTS", "0")
    with pytest.raises(ValueError, match="EBR_GATE_REQUESTS must be >= 1"):
        load_settings()
