import hashlib
import json
from dataclasses import replace
from datetime import UTC, date, datetime

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ebr import synthetic
from ebr.synthetic import PROFILES, generate, generate_day

START = date(2026, 1, 1)
EVENT_COLUMNS = [
    "request_id",
    "event_time",
    "user_id",
    "query",
    "item_id",
    "event_type",
    "position",
]
ITEM_COLUMNS = ["item_id", "title", "leaf_category", "top_category", "brand", "shop", "price"]


def test_a_day_is_identical_when_regenerated_alone():
    a = generate_day(date(2026, 1, 3), START, PROFILES["tiny"], seed=5)
    b = generate_day(date(2026, 1, 3), START, PROFILES["tiny"], seed=5)
    c = generate_day(date(2026, 1, 3), START, PROFILES["tiny"], seed=6)
    assert a[0].equals(b[0]) and a[1].equals(b[1])
    assert not a[0].equals(c[0])


def test_days_follow_the_landing_contract_and_grow(tmp_path):
    paths = generate(tmp_path, START, 2, "tiny", seed=1)
    assert [p.name for p in paths] == ["ds=2026-01-01", "ds=2026-01-02"]
    sizes = []
    for day, path in enumerate(paths):
        events = pq.read_table(path / "events.parquet")
        items = pq.read_table(path / "items.parquet")
        assert events.column_names == EVENT_COLUMNS and items.column_names == ITEM_COLUMNS
        lo = datetime(2026, 1, 1 + day, tzinfo=UTC)
        assert pc.min(events["event_time"]).as_py() >= lo
        assert (pc.max(events["event_time"]).as_py() - lo).total_seconds() < 86_400
        assert set(pc.unique(events["event_type"]).to_pylist()) == {
            "impression",
            "click",
            "cart",
            "purchase",
        }
        assert set(events["item_id"].to_pylist()) <= set(items["item_id"].to_pylist())
        assert pc.min(items["price"]).as_py() > 0
        sizes.append((items.num_rows, pc.count_distinct(events["user_id"]).as_py()))
    assert sizes[1][0] == sizes[0][0] + PROFILES["tiny"].new_items_per_day
    # the catalogue only grows: yesterday's items keep their titles
    first = pq.read_table(paths[0] / "items.parquet")
    second = pq.read_table(paths[1] / "items.parquet").slice(0, first.num_rows)
    assert first.equals(second)


def test_clicks_favour_items_whose_titles_match_the_query():
    events = generate_day(START, START, PROFILES["tiny"], seed=2)[0].to_pandas()
    items = generate_day(START, START, PROFILES["tiny"], seed=2)[1].to_pandas().set_index("item_id")
    events["overlap"] = [
        len(set(q.split()) & set(items.title[i].split())) > 0
        for q, i in zip(events["query"], events["item_id"])
    ]
    by_type = events.groupby("event_type")["overlap"].mean()
    assert by_type["click"] > by_type["impression"]


def _digest(table) -> str:
    """Of the values, not the file bytes (which carry the Parquet writer's version)."""
    return hashlib.sha256(
        json.dumps(table.to_pydict(), default=str, sort_keys=True).encode()
    ).hexdigest()[:16]


@pytest.mark.parametrize(
    "profile, ds, events, items",
    [
        ("tiny", date(2026, 1, 3), "c4b1a46f9b1b85c8", "5fabd22b6fbc161e"),
        ("small", date(2026, 1, 2), "24bbffe05a26e206", "ec909a65ffbf2b25"),
    ],
)
def test_tiny_and_small_days_stay_what_they_were(profile, ds, events, items):
    """Digests recorded with the request-by-request generator before the chunked one was added:
    seeded days (and every figure measured on them) do not change under a refactoring."""
    got = generate_day(ds, START, PROFILES[profile], seed=7)
    assert (_digest(got[0]), _digest(got[1])) == (events, items)


# The chunked generator of medium and large, at a size a test can afford.
SCALED = replace(
    PROFILES["medium"],
    items=4_000,
    new_items_per_day=100,
    users=2_000,
    new_users_per_day=100,
    requests_per_day=3_000,
)


def test_chunked_days_are_deterministic_and_follow_the_contract(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "CHUNK", 1_000)  # three chunks, three row groups
    a = generate_day(date(2026, 1, 2), START, SCALED, seed=5)
    assert a[0].equals(generate_day(date(2026, 1, 2), START, SCALED, seed=5)[0])
    assert not a[0].equals(generate_day(date(2026, 1, 2), START, SCALED, seed=6)[0])

    monkeypatch.setitem(PROFILES, "scaled", SCALED)
    day = generate(tmp_path, START, 2, "scaled", seed=5)[1]
    assert pq.ParquetFile(day / "events.parquet").metadata.num_row_groups == 3
    events, items = pq.read_table(day / "events.parquet"), pq.read_table(day / "items.parquet")
    assert events.equals(a[0]) and items.equals(a[1])
    assert events.column_names == EVENT_COLUMNS and items.column_names == ITEM_COLUMNS
    lo = datetime(2026, 1, 2, tzinfo=UTC)
    assert pc.min(events["event_time"]).as_py() >= lo
    assert (pc.max(events["event_time"]).as_py() - lo).total_seconds() < 86_400
    assert set(pc.unique(events["event_type"]).to_pylist()) == {
        "impression",
        "click",
        "cart",
        "purchase",
    }
    assert set(events["item_id"].to_pylist()) <= set(items["item_id"].to_pylist())
    assert items.num_rows == SCALED.items + SCALED.new_items_per_day
    impressions = events.filter(pc.equal(events["event_type"], "impression"))
    assert pc.count_distinct(impressions["request_id"]).as_py() == SCALED.requests_per_day
    # a request shows distinct items, at positions 0..shown-1
    pairs = pc.binary_join_element_wise(impressions["request_id"], impressions["item_id"], "/")
    assert pc.count_distinct(pairs).as_py() == impressions.num_rows
    assert pc.max(impressions["position"]).as_py() == SCALED.shown - 1


def test_chunked_clicks_favour_matching_titles_and_profiles_have_their_size():
    events, items = generate_day(START, START, SCALED, seed=2)
    frame = events.to_pandas()
    titles = items.to_pandas().set_index("item_id").title
    frame["overlap"] = [
        len(set(q.split()) & set(titles[i].split())) > 0
        for q, i in zip(frame["query"], frame["item_id"])
    ]
    by_type = frame.groupby("event_type")["overlap"].mean()
    assert by_type["click"] > by_type["impression"]
    # events per request as in the sequential generator (~11.9): medium ~1M a day, large ~10M
    per_request = events.num_rows / SCALED.requests_per_day
    assert 11 < per_request < 13
    for name, events_per_day, catalogue in (("medium", 1e6, 200_000), ("large", 1e7, 1_000_000)):
        assert abs(PROFILES[name].requests_per_day * per_request / events_per_day - 1) < 0.1
        assert PROFILES[name].items == catalogue
