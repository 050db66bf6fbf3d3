from datetime import date, datetime, timezone

import pyarrow.compute as pc
import pyarrow.parquet as pq

from ebr.synthetic import PROFILES, generate, generate_day

START = date(2026, 1, 1)
EVENT_COLUMNS = ["request_id", "event_time", "user_id", "query", "item_id", "event_type", "position"]
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
        lo = datetime(2026, 1, 1 + day, tzinfo=timezone.utc)
        assert pc.min(events["event_time"]).as_py() >= lo
        assert (pc.max(events["event_time"]).as_py() - lo).total_seconds() < 86_400
        assert set(pc.unique(events["event_type"]).to_pylist()) == {"impression", "click", "cart", "purchase"}
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
    events["overlap"] = [len(set(q.split()) & set(items.title[i].split())) > 0
                         for q, i in zip(events["query"], events["item_id"])]
    by_type = events.groupby("event_type")["overlap"].mean()
    assert by_type["click"] > by_type["impression"]
