"""dbt transforms (transforms/): two consecutive days, idempotent reruns, point-in-time features.

One module-scoped warehouse is built from tiny hand-made landing files: day 1, day 2, then day 1
again (a rerun while a later day exists). Tests only read it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import pandas as pd
import pytest

from ebr.settings import Settings, load_settings
from ebr.transform import DBT_PROJECT_DIR, dbt_build

DAY1, DAY2 = "2024-03-01", "2024-03-02"
EVAL_START_HOUR = 20  # the default of Settings.eval_start_hour
QUERY_MAX_CHARS = 512  # staging cuts longer queries (docs/contracts.md)
EMOJI_QUERY = "tênis 👟 corrida 🏃‍♀️"
LONG_QUERY = "tênis de corrida 👟 " * 600  # 13.8 kB

ACTIONS = ("click", "cart", "purchase")
ATTRS = {"item": "item_id", "shop": "shop", "leaf": "leaf_category", "brand": "brand"}
LISTS = [
    "rt_items",
    "st_items",
    *[f"lt_{action}_{attr}" for action in ACTIONS for attr in ATTRS],
    "past_queries",
]
REQUEST_COLUMNS = ["ds", "request_id", "user_id", "request_time", "query"]
TRAINING_COLUMNS = [*REQUEST_COLUMNS, "item_id", "label_event", *LISTS]
EVAL_COLUMNS = [*REQUEST_COLUMNS, "clicked_items", "purchased_items", *LISTS]
USER_FEATURE_COLUMNS = ["ds", "user_id", "as_of", *LISTS]
CORPUS_COLUMNS = [
    "ds",
    "item_id",
    "title",
    "leaf_category",
    "top_category",
    "brand",
    "shop",
    "price",
]
DAY_MODELS = [
    "stg_events",
    "stg_items",
    "int_requests",
    "int_request_labels",
    "int_user_actions",
    "int_user_behaviour",
    "mart_training_examples",
    "mart_eval_examples",
    "mart_item_corpus",
    "mart_user_features",
]


# ---------------------------------------------------------------------------------------------
# Tiny landing data


def _ts(day: str, clock: str) -> datetime:
    return datetime.fromisoformat(f"{day} {clock}")


def _catalogue() -> pd.DataFrame:
    rows = [
        {
            "item_id": f"i{k:02d}",
            "title": f"item number {k}",
            "leaf_category": f"leaf{k % 5}",
            "top_category": f"top{k % 2}",
            "brand": "" if k % 7 == 0 else f"brand{k % 6}",
            "shop": f"shop{k % 4}",
            "price": float(k),
        }
        for k in range(30)
    ]
    # The item of the point-in-time scenario: attributes found nowhere else.
    rows.append(
        {
            "item_id": "i_pit",
            "title": "point in time",
            "leaf_category": "leaf_pit",
            "top_category": "top_pit",
            "brand": "brand_pit",
            "shop": "shop_pit",
            "price": 1.0,
        }
    )
    return pd.DataFrame(rows)


def _request(rid, user, query, start, shown, clicks=(), carts=(), buys=()) -> list[tuple]:
    """Events of one request: impressions at `start`, then actions a few seconds later."""
    rows = [(rid, start, user, query, item, "impression", pos) for pos, item in enumerate(shown)]
    for offset, (items, kind) in (
        (5, (clicks, "click")),
        (100, (carts, "cart")),
        (200, (buys, "purchase")),
    ):
        for k, item in enumerate(items):
            position = shown.index(item) if item in shown else 0
            rows.append(
                (rid, start + timedelta(seconds=offset + k), user, query, item, kind, position)
            )
    return rows


def _pit_scenario() -> dict[str, list[tuple]]:
    """User u_pit: rA's click on i_pit happens after rB started and exactly when rC starts."""
    day1 = [
        # rA starts at 10:00:00; its click on i_pit comes at 10:00:30 and its cart at 10:00:40.
        ("rA", _ts(DAY1, "10:00:00"), "u_pit", "pit first", "i_pit", "impression", 0),
        ("rA", _ts(DAY1, "10:00:00"), "u_pit", "pit first", "i01", "impression", 1),
        ("rA", _ts(DAY1, "10:00:30"), "u_pit", "pit first", "i_pit", "click", 0),
        ("rA", _ts(DAY1, "10:00:40"), "u_pit", "pit first", "i_pit", "cart", 0),
        # rB starts at 10:00:20, before rA's click; its own click on i02 is at 10:00:25.
        ("rB", _ts(DAY1, "10:00:20"), "u_pit", "pit second", "i02", "impression", 0),
        ("rB", _ts(DAY1, "10:00:25"), "u_pit", "pit second", "i02", "click", 0),
        # rC starts exactly when rA's click happens: that click is not strictly before rC.
        ("rC", _ts(DAY1, "10:00:30"), "u_pit", "pit third", "i03", "impression", 0),
        ("rC", _ts(DAY1, "10:00:35"), "u_pit", "pit third", "i03", "click", 0),
        # rD, in the evening (evaluation slice), sees everything above.
        ("rD", _ts(DAY1, "21:00:00"), "u_pit", "pit fourth", "i04", "impression", 0),
        ("rD", _ts(DAY1, "21:00:10"), "u_pit", "pit fourth", "i04", "click", 0),
    ]
    day2 = [
        ("rE", _ts(DAY2, "09:00:00"), "u_pit", "pit fifth", "i05", "impression", 0),
        ("rE", _ts(DAY2, "09:00:10"), "u_pit", "pit fifth", "i05", "click", 0),
    ]
    return {DAY1: day1, DAY2: day2}


def _odd_queries(day: str) -> list[tuple]:
    """User u_text searches with emoji, then with a 10 kB query, on the morning of `day`."""
    return [
        *_request("r-emoji", "u_text", EMOJI_QUERY, _ts(day, "08:00:00"), ["i06", "i07"], ["i07"]),
        *_request("r-long", "u_text", LONG_QUERY, _ts(day, "09:00:00"), ["i08", "i09"], ["i08"]),
    ]


def _repeater(day: str) -> list[tuple]:
    """User u_rep: 25 distinct queries, then one query more times than past_queries looks back
    (past_query_lookback, 100), then 25 new ones: every way its lists are found is exercised.
    Two clicks a request (320) fill three blocks of the action lists (150 each), a cart every
    third request one."""
    queries = [f"old {k}" for k in range(25)] + ["again"] * 110 + [f"new {k}" for k in range(25)]
    start = _ts(day, "01:00:00")
    rows: list[tuple] = []
    for k, text in enumerate(queries):
        shown = [f"i{(k + j) % 30:02d}" for j in range(3)]
        carts = shown[:1] if k % 3 == 0 else []
        rows += _request(
            f"r-rep-{k:03d}", "u_rep", text, start + timedelta(minutes=k), shown, shown[:2], carts
        )
    return rows


def _random_day(day: str, rng: random.Random) -> list[tuple]:
    """Background traffic; u1 clicks often enough (> 50 clicks a day) to fill st_items on day 2."""
    queries = [f"query {k}" for k in range(25)]
    items = [f"i{k:02d}" for k in range(30)]
    rows: list[tuple] = []
    for user, n_requests, n_clicks in (("u1", 32, 2), ("u2", 8, 1), ("u3", 6, 1)):
        starts = sorted(rng.sample(range(0, 86_000_000_000, 1_000), n_requests))  # microseconds
        for k, start_us in enumerate(starts):
            start = _ts(day, "00:00:00") + timedelta(microseconds=start_us)
            shown = rng.sample(items, 5)
            clicks = shown[:n_clicks] if rng.random() < 0.9 else []
            carts = clicks[:1] if clicks and rng.random() < 0.4 else []
            buys = carts if carts and rng.random() < 0.5 else []
            rid = f"{day}-{user}-{k:02d}"
            rows += _request(rid, user, rng.choice(queries), start, shown, clicks, carts, buys)
    # u2 clicks an item missing from the catalogue: its attributes become ''.
    rows += _request(f"{day}-u2-gone", "u2", "gone", _ts(day, "12:34:56"), ["i_gone"], ["i_gone"])
    return rows


def _events_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(
        rows,
        columns=[
            "request_id",
            "event_time",
            "user_id",
            "query",
            "item_id",
            "event_type",
            "position",
        ],
    )
    frame["event_time"] = (
        pd.to_datetime(frame["event_time"]).dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    )
    frame["position"] = frame["position"].astype("int32")
    return frame


def make_landing() -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    rng = random.Random(11)
    pit = _pit_scenario()
    out = {}
    for day in (DAY1, DAY2):
        rows = _random_day(day, rng) + pit[day]
        if day == DAY1:
            rows += _odd_queries(day) + _repeater(day)
        rows.append(rows[-1])  # an exact duplicate event: staging keeps one
        out[day] = (_events_frame(rows), _catalogue())
    return out


def write_landing(settings: Settings, ds: str, events: pd.DataFrame, items: pd.DataFrame) -> None:
    folder = settings.landing_day(ds)
    folder.mkdir(parents=True, exist_ok=True)
    events.to_parquet(folder / "events.parquet", index=False)
    items.to_parquet(folder / "items.parquet", index=False)


# ---------------------------------------------------------------------------------------------
# Reference implementation of docs/contracts.md, in plain Python, for the oracle test


def reference_events(landing: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> pd.DataFrame:
    """All landed events, deduplicated like staging, with the item attributes of their day."""
    frames = []
    for day, (events, items) in landing.items():
        frame = events.merge(
            items[["item_id", "shop", "leaf_category", "brand"]], on="item_id", how="left"
        )
        frame[["shop", "leaf_category", "brand"]] = frame[
            ["shop", "leaf_category", "brand"]
        ].fillna("")
        frame["ds"] = day
        frames.append(frame)
    events = pd.concat(frames, ignore_index=True)
    events["event_time"] = events["event_time"].dt.tz_localize(None)
    events["query"] = events["query"].str[:QUERY_MAX_CHARS]
    return events.sort_values("event_time").drop_duplicates(
        ["ds", "request_id", "item_id", "event_type"]
    )


def reference_requests(events: pd.DataFrame) -> pd.DataFrame:
    return events.groupby("request_id").agg(
        ds=("ds", "min"),
        user_id=("user_id", "min"),
        query=("query", "min"),
        request_time=("event_time", "min"),
    )


def reference_lists(
    events: pd.DataFrame, requests: pd.DataFrame, user: str, t: datetime
) -> dict[str, list[str]]:
    """The contract's behaviour lists of `user` at time `t`, computed the plain way."""
    mine = events[events.user_id == user]
    history = mine[(mine.event_time < t) & (mine.event_time >= t - timedelta(days=30))]
    lists: dict[str, list[str]] = {}
    for action in ACTIONS:
        recent_first = history[history.event_type == action].sort_values(
            ["event_time", "request_id", "item_id"], ascending=False
        )
        if action == "click":
            lists["rt_items"] = recent_first.head(50).item_id.tolist()[::-1]
            st = recent_first.iloc[50:150]
            lists["st_items"] = st[st.event_time >= t - timedelta(days=10)].item_id.tolist()[::-1]
        for attr, column in ATTRS.items():
            lists[f"lt_{action}_{attr}"] = recent_first.head(100)[column].tolist()[::-1]
    past = requests[
        (requests.user_id == user)
        & (requests.request_time < t)
        & (requests.request_time >= t - timedelta(days=30))
    ]
    latest = past.groupby("query").request_time.max().reset_index()
    latest = latest.sort_values(["request_time", "query"], ascending=False).head(20)
    lists["past_queries"] = latest["query"].tolist()[::-1]
    return lists


# ---------------------------------------------------------------------------------------------
# The warehouse


def query(settings: Settings, sql: str) -> pd.DataFrame:
    connection = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        return connection.execute(sql).df()
    finally:
        connection.close()


def snapshot(settings: Settings) -> dict[str, list[tuple]]:
    """Row count and an order-independent checksum of every model, per day."""
    connection = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        return {
            model: connection.execute(
                f"select ds, count(*), sum(hash(t)::hugeint) from {model} t group by ds order by ds"
            ).fetchall()
            for model in DAY_MODELS
        }
    finally:
        connection.close()


@dataclass
class Built:
    settings: Settings
    landing: dict[str, tuple[pd.DataFrame, pd.DataFrame]]
    after_two_days: dict[str, list[tuple]]
    after_rerun: dict[str, list[tuple]]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EBR_HOME", str(tmp_path_factory.mktemp("ebr")))
        mp.delenv("EBR_EVAL_START_HOUR", raising=False)
        settings = load_settings()
    landing = make_landing()
    for day, (events, items) in landing.items():
        write_landing(settings, day, events, items)
    dbt_build(DAY1, settings)
    dbt_build(DAY2, settings)
    after_two_days = snapshot(settings)
    dbt_build(DAY1, settings)  # rerun an earlier day while a later one exists
    return Built(settings, landing, after_two_days, snapshot(settings))


# ---------------------------------------------------------------------------------------------
# Tests


def test_two_days_accumulate(built: Built) -> None:
    for model, rows in built.after_two_days.items():
        days = [str(ds) for ds, n, _ in rows if n > 0]
        assert days == [DAY1, DAY2], f"{model} holds days {days}"
    staged = query(
        built.settings, "select ds, count(*) as n from stg_events group by ds order by ds"
    )
    # one exact duplicate per day is dropped
    assert staged.n.tolist() == [len(built.landing[d][0]) - 1 for d in (DAY1, DAY2)]
    # dbt artefacts stay out of the source tree
    assert (built.settings.home / "dbt" / "target" / "manifest.json").is_file()
    assert (built.settings.home / "dbt" / "logs").is_dir()


@pytest.mark.reliability
def test_rerun_of_a_day_is_idempotent(built: Built, record_property) -> None:
    def rows(models: dict[str, list[tuple]]) -> int:
        return sum(n for days in models.values() for _, n, _ in days)

    record_property("rows_lost", max(0, rows(built.after_two_days) - rows(built.after_rerun)))
    assert built.after_rerun == built.after_two_days
    keys = {
        "stg_events": "ds, request_id, item_id, event_type",
        "stg_items": "ds, item_id",
        "mart_training_examples": "ds, request_id, item_id",
        "mart_eval_examples": "ds, request_id",
        "mart_item_corpus": "ds, item_id",
    }
    for model, key in keys.items():
        dupes = query(
            built.settings,
            f"select {key}, count(*) from {model} group by {key} having count(*) > 1",
        )
        assert dupes.empty, f"duplicate rows in {model}:\n{dupes}"


def test_marts_have_exactly_the_contract_columns(built: Built) -> None:
    for model, columns in (
        ("mart_training_examples", TRAINING_COLUMNS),
        ("mart_eval_examples", EVAL_COLUMNS),
        ("mart_item_corpus", CORPUS_COLUMNS),
        ("mart_user_features", USER_FEATURE_COLUMNS),
    ):
        described = query(built.settings, f"describe {model}")
        assert described.column_name.tolist() == columns
        types = dict(zip(described.column_name, described.column_type))
        assert types["ds"] == "DATE"
        if model != "mart_item_corpus":
            assert types.get("request_time", types.get("as_of")) == "TIMESTAMP"
            for name in LISTS + (
                ["clicked_items", "purchased_items"] if model == "mart_eval_examples" else []
            ):
                assert types[name] == "VARCHAR[]", (model, name, types[name])
                nulls = query(
                    built.settings, f"select count(*) as n from {model} where {name} is null"
                )
                assert nulls.n[0] == 0, f"{model}.{name} has NULL lists"


def test_click_after_request_time_is_not_a_feature_of_that_request(built: Built) -> None:
    training = query(built.settings, "select * from mart_training_examples where user_id = 'u_pit'")
    evaluation = query(built.settings, "select * from mart_eval_examples where user_id = 'u_pit'")
    by_request = {r.request_id: r for r in pd.concat([training, evaluation]).itertuples()}
    pit_values = {"i_pit", "shop_pit", "leaf_pit", "brand_pit"}

    def values(request_id: str) -> set[str]:
        row = by_request[request_id]
        return {v for name in LISTS for v in getattr(row, name)}

    # rB started at 10:00:20, before rA's click on i_pit (10:00:30): no trace of i_pit.
    assert not values("rB") & pit_values
    assert list(by_request["rB"].past_queries) == ["pit first"]
    # rC started exactly at 10:00:30: the click is not strictly before it either.
    assert not values("rC") & pit_values
    assert list(by_request["rC"].rt_items) == ["i02"]  # rB's click at 10:00:25 is
    assert list(by_request["rC"].past_queries) == ["pit first", "pit second"]
    # rD (21:00, evaluation slice) sees the click and the cart, oldest first.
    rd = by_request["rD"]
    assert list(rd.rt_items) == ["i02", "i_pit", "i03"]
    assert list(rd.lt_click_shop) == ["shop2", "shop_pit", "shop3"]
    assert list(rd.lt_cart_item) == ["i_pit"] and list(rd.lt_cart_brand) == ["brand_pit"]
    assert list(rd.lt_purchase_item) == []
    assert list(rd.past_queries) == ["pit first", "pit second", "pit third"]
    assert "rD" not in set(training.request_id)
    # rE, the next day, also sees rD's click: history crosses days.
    assert list(by_request["rE"].rt_items) == ["i02", "i_pit", "i03", "i04"]


def test_past_queries_reach_past_a_query_repeated_beyond_the_look_back(built: Built) -> None:
    rows = query(
        built.settings,
        "select request_id, past_queries from int_user_behaviour "
        "where request_id in ('r-rep-135', 'r-rep-159')",
    )
    by_request = {row.request_id: list(row.past_queries) for row in rows.itertuples()}
    # After 110 requests for "again", the 19 latest of the earlier queries still count.
    assert by_request["r-rep-135"] == [f"old {k}" for k in range(6, 25)] + ["again"]
    assert by_request["r-rep-159"] == [f"new {k}" for k in range(4, 24)]


def test_behaviour_matches_a_reference_implementation(built: Built) -> None:
    events = reference_events(built.landing)
    requests = reference_requests(events)
    expected = {
        str(rid): reference_lists(events, requests, r.user_id, r.request_time)
        for rid, r in requests.iterrows()
    }
    rows = query(built.settings, f"select request_id, {', '.join(LISTS)} from int_user_behaviour")
    assert set(rows.request_id) == set(expected)
    checked_st = 0
    for row in rows.itertuples():
        for name in LISTS:
            assert list(getattr(row, name)) == expected[row.request_id][name], (
                row.request_id,
                name,
            )
        checked_st += len(row.st_items) > 0
    assert checked_st > 0, "the data should exercise st_items"
    # The marts carry exactly those lists.
    marts = query(
        built.settings,
        f"select request_id, {', '.join(LISTS)} from mart_training_examples "
        f"union all select request_id, {', '.join(LISTS)} from mart_eval_examples",
    )
    assert len(marts) > 0
    for row in marts.itertuples():
        for name in LISTS:
            assert list(getattr(row, name)) == expected[row.request_id][name], (
                row.request_id,
                name,
            )
    # An item missing from the catalogue keeps its place with '' attributes.
    gone = query(
        built.settings, "select lt_click_shop from int_user_behaviour where user_id = 'u2'"
    )
    assert any("" in list(shops) for shops in gone.lt_click_shop)


def test_user_features_are_the_behaviour_at_the_end_of_the_day(built: Built) -> None:
    events = reference_events(built.landing)
    requests = reference_requests(events)
    rows = query(
        built.settings, f"select ds, user_id, as_of, {', '.join(LISTS)} from mart_user_features"
    )
    for day in (DAY1, DAY2):
        mine = rows[rows.ds == pd.Timestamp(day)]
        assert sorted(mine.user_id) == sorted(requests[requests.ds == day].user_id.unique())
        end_of_day = datetime.fromisoformat(day) + timedelta(days=1)
        for row in mine.itertuples():
            assert row.as_of == end_of_day
            expected = reference_lists(events, requests, row.user_id, end_of_day)
            for name in LISTS:
                assert list(getattr(row, name)) == expected[name], (day, row.user_id, name)
    latest = rows[(rows.user_id == "u_pit") & (rows.ds == pd.Timestamp(DAY2))].iloc[0]
    assert list(latest.rt_items) == ["i02", "i_pit", "i03", "i04", "i05"]


def test_eval_and_training_are_disjoint_by_time(built: Built) -> None:
    for day in (DAY1, DAY2):
        start = pd.Timestamp(day)
        cutoff = start + pd.Timedelta(hours=EVAL_START_HOUR)
        training = query(built.settings, f"select * from mart_training_examples where ds = '{day}'")
        evaluation = query(built.settings, f"select * from mart_eval_examples where ds = '{day}'")
        assert len(training) > 0 and len(evaluation) > 0
        assert training.request_time.min() >= start and training.request_time.max() < cutoff
        assert evaluation.request_time.min() >= cutoff
        assert evaluation.request_time.max() < start + pd.Timedelta(days=1)
        assert not set(training.request_id) & set(evaluation.request_id)
        # eval rows have at least one positive; purchases are among them
        for row in evaluation.itertuples():
            assert len(row.clicked_items) >= 1
            assert set(row.purchased_items) <= set(row.clicked_items)
        assert set(training.label_event) <= {"click", "cart", "purchase"}


def test_labels_are_the_strongest_action(built: Built) -> None:
    events = query(
        built.settings,
        f"select request_id, item_id, list(event_type) as kinds from stg_events "
        f"where ds = '{DAY1}' and event_type <> 'impression' group by all",
    )
    labels = query(
        built.settings,
        f"select request_id, item_id, label_event from mart_training_examples where ds = '{DAY1}'",
    )
    strongest = {
        (r.request_id, r.item_id): max(r.kinds, key=("click", "cart", "purchase").index)
        for r in events.itertuples()
    }
    assert len(labels) > 0
    for row in labels.itertuples():
        assert row.label_event == strongest[(row.request_id, row.item_id)]


@pytest.mark.reliability
def test_queries_keep_emoji_and_are_cut_to_the_contract_length(built: Built) -> None:
    assert len(LONG_QUERY.encode()) > 10_000
    rows = query(
        built.settings,
        "select request_id, query, past_queries from mart_training_examples where user_id = 'u_text'",
    )
    by_request = {r.request_id: r for r in rows.itertuples()}
    assert by_request["r-emoji"].query == EMOJI_QUERY
    assert by_request["r-long"].query == LONG_QUERY[:QUERY_MAX_CHARS]
    assert list(by_request["r-long"].past_queries) == [EMOJI_QUERY]


@pytest.mark.reliability
def test_duplicate_events_are_removed_by_staging(built: Built, tmp_path, monkeypatch) -> None:
    """Day 1 landed with every event twice, in another order, builds the same models as the
    landing without them (the shared warehouse's day 1, whose one duplicate staging dropped)."""
    monkeypatch.setenv("EBR_HOME", str(tmp_path / "ebr"))
    monkeypatch.delenv("EBR_EVAL_START_HOUR", raising=False)
    settings = load_settings()
    events, items = built.landing[DAY1]
    write_landing(settings, DAY1, pd.concat([events, events]).sample(frac=1, random_state=3), items)
    dbt_build(DAY1, settings)

    def day1(models: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
        return {
            model: [row for row in rows if str(row[0]) == DAY1] for model, rows in models.items()
        }

    expected = day1(built.after_two_days)
    assert all(expected.values())
    assert day1(snapshot(settings)) == expected


def test_dbt_build_passes_vars_and_env_and_raises_with_dbt_output(tmp_path, monkeypatch) -> None:
    """The command line of dbt_build, checked with a stand-in for the dbt executable."""
    monkeypatch.setenv("EBR_HOME", str(tmp_path / "ebr"))
    monkeypatch.setenv("EBR_EVAL_START_HOUR", "18")
    settings = load_settings()
    record = tmp_path / "call.txt"
    fake = tmp_path / "dbt"
    fake.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {record}\n'
        f'echo "EBR_WAREHOUSE=$EBR_WAREHOUSE" >> {record}\n'
        'echo "Runtime Error: No files found that match the pattern events.parquet"\n'
        "exit 2\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr("ebr.transform.dbt_executable", lambda: str(fake))

    with pytest.raises(RuntimeError, match="(?s)ds=2024-03-03.*No files found.*events.parquet"):
        dbt_build("2024-03-03", settings, select="stg_events+")

    args = record.read_text().splitlines()
    assert args[0] == "build"
    assert args[args.index("--project-dir") + 1] == str(DBT_PROJECT_DIR)
    assert args[args.index("--profiles-dir") + 1] == str(DBT_PROJECT_DIR)
    assert args[args.index("--target-path") + 1] == str(settings.home / "dbt" / "target")
    assert args[args.index("--log-path") + 1] == str(settings.home / "dbt" / "logs")
    assert args[args.index("--select") + 1] == "stg_events+"
    assert json.loads(args[args.index("--vars") + 1]) == {
        "ds": "2024-03-03",
        "landing_root": str(settings.landing),
        "eval_start_hour": 18,
    }
    assert args[-1] == f"EBR_WAREHOUSE={settings.warehouse}"
    with pytest.raises(ValueError):
        dbt_build("03/03/2024", settings)
