import csv
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evaluation.importers import ImportRejected, heldout, import_bestbuy, import_crowdflower

REAL = Path(__file__).resolve().parents[2] / "shared" / "data"

# The landing contract (docs/contracts.md), written out independently of the importers.
CONTRACT_EVENTS = pa.schema(
    [
        ("request_id", pa.string()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("user_id", pa.string()),
        ("query", pa.string()),
        ("item_id", pa.string()),
        ("event_type", pa.string()),
        ("position", pa.int32()),
    ]
)
CONTRACT_ITEMS = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("leaf_category", pa.string()),
        ("top_category", pa.string()),
        ("brand", pa.string()),
        ("shop", pa.string()),
        ("price", pa.float64()),
    ]
)

CLICK_HEADER = ["user", "sku", "category", "query", "click_time", "query_time"]
PRODUCT_HEADER = [
    "sku",
    "name",
    "type",
    "salePrice",
    "shortDescription",
    "longDescription",
    "category_path",
    "releaseDate",
    "customerReviewCount",
]
PATH = "Best Buy > Video Games > Xbox 360 > Xbox 360 Games"
PRODUCTS = [
    [
        "100",
        "Gears of War 3 - Xbox 360",
        "Game",
        "59.99",
        "Short",
        'Long, "quoted"\ntext',
        PATH,
        "2011-09-20",
        "12.0",
    ],
    ["200", "Madden NFL 12 - Xbox 360", "Game", "39.99", "", "Long", PATH + " > Sports", "", ""],
    [
        "300",
        "Forza 4 - Xbox 360",
        "Bundle",
        "0",
        "Short",
        "Long",
        "Best Buy > Best Buy Racing",
        "2011-10-11",
        "3.0",
    ],
]
# (user, sku, query, query_time): click_time is 20 s later. Time order is not file order, and
# the latest clicks sit in train.csv: the third-party split must not leak into the time split.
TRAIN = [
    ("u1", "100", "gears of war 3", "2011-09-14 12:45:07.064"),
    ("u2", "200", "Madden 12", "2011-09-15 23:59:59.9"),
    ("u3", "300", "forza 4", "2011-09-16 08:00:00"),
    ("u1", "200", "madden", "2011-09-16 09:30:00.12"),
    ("u4", "999", "unknown game", "2011-09-16 10:00:00.5"),  # sku not in the catalogue
    ("u5", "100", "gears", "2011-09-16 22:10:00.001"),
]
TEST = [
    ("u2", "300", "Forza", "2011-09-14 13:00:00.5"),
    ("u6", "100", "gow 3", "2011-09-15 08:00:00.25"),
    ("u3", "200", "madden nfl", "2011-09-16 20:00:00.75"),
    ("u7", "300", "forza motorsport", "2011-09-15 12:00:00.5"),
    ("u8", "100", "gears 3", "2011-09-16 09:30:00.12"),  # same time as a train.csv click
]


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _click_rows(clicks) -> list[list[str]]:
    """Rows in the real files' format; the click comes 20 s after the query unless given."""
    rows = []
    for user, sku, query, qt, *click in clicks:
        ct = (
            click[0]
            if click
            else (datetime.fromisoformat(qt) + timedelta(seconds=20)).isoformat(
                sep=" ", timespec="milliseconds"
            )
        )
        rows.append([user, sku, "abcat0701002", query, ct, qt])
    return rows


def _bestbuy(root: Path, train=TRAIN, test=TEST, products=PRODUCTS) -> Path:
    src = root / "bestbuy"
    _write_csv(src / "train.csv", CLICK_HEADER, _click_rows(train))
    _write_csv(src / "test.csv", CLICK_HEADER, _click_rows(test))
    _write_csv(src / "products_parsed.csv", PRODUCT_HEADER, products)
    return src


def _read_days(landing: Path) -> dict[str, tuple[pa.Table, pa.Table]]:
    return {
        p.name.removeprefix("ds="): (
            pq.read_table(p / "events.parquet"),
            pq.read_table(p / "items.parquet"),
        )
        for p in sorted(landing.glob("ds=*"))
    }


def _bytes(landing: Path) -> dict[str, bytes]:
    return {str(p.relative_to(landing)): p.read_bytes() for p in sorted(landing.rglob("*.parquet"))}


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- Best Buy ----------------------------------------------------------------------------------


def test_bestbuy_imports_into_contract_days_and_splits_the_latest_share_by_time(tmp_path):
    landing = tmp_path / "landing"
    split = import_bestbuy(_bestbuy(tmp_path), landing)

    known = [c for c in TRAIN + TEST if c[1] != "999"]
    assert split.dropped_unknown_sku == 1
    assert split.train_clicks + split.test_clicks == len(known) == 10
    assert split.test_clicks == 2  # 20% of 10
    latest = sorted(known, key=lambda c: _utc(c[3]))[-2:]
    assert sorted(split.test.column("query").to_pylist()) == sorted(c[2] for c in latest)
    assert split.cutoff == _utc(latest[0][3])
    assert split.users == len({c[0] for c in known})
    assert split.items == len(PRODUCTS)
    assert split.days == ["2011-09-14", "2011-09-15", "2011-09-16"]

    days = _read_days(landing)
    assert list(days) == split.days
    events = pa.concat_tables(e for e, _ in days.values())
    for ds, (day_events, items) in days.items():
        assert day_events.schema.remove_metadata() == CONTRACT_EVENTS
        assert items.schema.remove_metadata() == CONTRACT_ITEMS
        assert {t.date().isoformat() for t in day_events.column("event_time").to_pylist()} == {ds}
        assert sorted(items.column("item_id").to_pylist()) == ["100", "200", "300"]
    # train and test period are both in landing, every known click once, none of the unknown
    assert events.num_rows == 10
    assert "999" not in events.column("item_id").to_pylist()
    assert set(events.column("event_type").to_pylist()) == {"click"}
    ids = events.column("request_id").to_pylist()
    test_ids = set(split.test.column("request_id").to_pylist())
    assert len(set(ids)) == 10 and test_ids <= set(ids)
    train_times = [
        t for r, t in zip(ids, events.column("event_time").to_pylist()) if r not in test_ids
    ]
    assert max(train_times) <= split.cutoff

    items = {r["item_id"]: r for r in days["2011-09-14"][1].to_pylist()}
    assert items["100"] == {
        "item_id": "100",
        "title": "Gears of War 3 - Xbox 360",
        "leaf_category": "Xbox 360 Games",
        "top_category": "Video Games",
        "brand": "",
        "shop": "bestbuy",
        "price": 59.99,
    }
    assert items["200"]["leaf_category"] == "Sports"
    assert (items["300"]["top_category"], items["300"]["leaf_category"]) == ("Best Buy Racing",) * 2


def test_bestbuy_reimport_rewrites_the_same_bytes(tmp_path):
    src = _bestbuy(tmp_path)
    first = import_bestbuy(src, tmp_path / "landing")
    before = _bytes(tmp_path / "landing")
    second = import_bestbuy(src, tmp_path / "landing")
    assert _bytes(tmp_path / "landing") == before
    assert first.test.equals(second.test)


@pytest.mark.parametrize(
    "file, line, column, train, test",
    [
        # line 1 is the header: TRAIN[0] is on line 2, TEST[2] on line 4
        (
            "test.csv",
            4,
            "query",
            TRAIN,
            [*TEST[:2], ("u3", "200", "   ", "2011-09-16 20:00:00.75"), *TEST[3:]],
        ),
        (
            "train.csv",
            2,
            "query_time",
            [("u1", "100", "gears", "abc", "2011-09-14 12:46:28.66"), *TRAIN[1:]],
            TEST,
        ),
        (
            "train.csv",
            3,
            "user",
            [TRAIN[0], ("", "200", "Madden 12", "2011-09-15 23:59:59.9"), *TRAIN[2:]],
            TEST,
        ),
    ],
)
def test_bestbuy_bad_row_is_rejected_by_file_line_and_column_and_nothing_is_written(
    tmp_path, file, line, column, train, test
):
    landing = tmp_path / "landing"
    with pytest.raises(ImportRejected) as err:
        import_bestbuy(_bestbuy(tmp_path, train=train, test=test), landing)
    assert f"{file} line {line}: column {column}:" in str(err.value)
    assert not landing.exists()


def test_bestbuy_click_before_its_query_and_negative_price_are_rejected(tmp_path):
    src = _bestbuy(tmp_path, products=[*PRODUCTS[:2], [*PRODUCTS[2][:3], "-5", *PRODUCTS[2][4:]]])
    rows = _click_rows(TRAIN)
    rows[1][4] = "2011-09-15 23:00:00"  # click an hour before the query
    _write_csv(src / "train.csv", CLICK_HEADER, rows)
    with pytest.raises(ImportRejected) as err:
        import_bestbuy(src, tmp_path / "landing")
    message = str(err.value)
    assert "train.csv line 3: column click_time:" in message
    # products_parsed.csv: the first product's long description spans two lines
    assert "products_parsed.csv line 5: column salePrice:" in message
    assert "2 problem(s)" in message
    assert not (tmp_path / "landing").exists()


def test_many_bad_rows_are_counted_and_only_the_first_ones_quoted(tmp_path):
    bad = [("u", "100", "", f"2011-09-14 12:00:{s:02d}") for s in range(25)]
    with pytest.raises(ImportRejected) as err:
        import_bestbuy(_bestbuy(tmp_path, train=bad), tmp_path / "landing")
    message = str(err.value)
    assert "25 problem(s)" in message
    assert "train.csv line 11: column query" in message
    assert "train.csv line 12:" not in message and "train.csv line 26:" not in message


@pytest.mark.skipif(
    not (REAL / "bestbuy" / "train.csv").exists(),
    reason="real data not found at ../shared/data (see README, Data credits)",
)
def test_bestbuy_real_log_imports_whole_and_splits_20_percent(tmp_path):
    rows = sum(
        sum(1 for _ in csv.DictReader((REAL / "bestbuy" / f).open(newline="")))
        for f in ("train.csv", "test.csv")
    )
    assert rows == 42_365
    start = time.perf_counter()
    split = import_bestbuy(REAL / "bestbuy", tmp_path / "landing")
    assert time.perf_counter() - start < 20
    assert split.dropped_unknown_sku + split.train_clicks + split.test_clicks == rows
    kept = split.train_clicks + split.test_clicks
    assert abs(split.test_clicks - 0.2 * kept) <= 1
    assert split.test.num_rows == split.test_clicks
    assert split.days[0] == "2011-08-11" and split.days[-1] == "2011-10-31"
    assert len(list((tmp_path / "landing").glob("ds=*"))) == len(split.days)


# --- CrowdFlower -------------------------------------------------------------------------------

CF_HEADER = [
    "id",
    "query",
    "product_title",
    "product_description",
    "median_relevance",
    "relevance_variance",
]
# "projector" and "wine rack" are training queries, "LED christmas lights" is held out (see
# test_heldout_matches_hand_computed_md5).
CF_ROWS = [
    ["1", "projector", "ViewSonic Pro8200 DLP Projector", "", "4", "0"],
    ["2", "projector", "Epson Home Cinema", 'Bright,\n"3LCD" projector', "3", "0.4"],
    ["3", "projector", "Phone case", "", "1", "0"],
    ["4", "wine rack", "Solid-Wood Wine Rack", "6 bottle", "4", "0"],
    ["5", "wine rack", "Wine Glasses", "", "2", "0.5"],
    ["6", "wine rack", "Solid-Wood Wine Rack", "6 bottle", "2", "0"],  # judged twice: keeps 4
    ["7", "LED christmas lights", "Set of 10 LED Train Lights", "", "4", "0"],
    ["8", "LED christmas lights", "Epson Home Cinema", 'Bright,\n"3LCD" projector', "1", "0"],
]


def _crowdflower(root: Path, rows=CF_ROWS) -> Path:
    return _write_csv(root / "crowdflower" / "train.csv", CF_HEADER, rows).parent


def test_heldout_matches_hand_computed_md5():
    # md5("led christmas lights") = 8e142cb2...535c, which is 0 mod 10; md5("projector") is 4
    # mod 10, md5("wireless mouse") 2, md5("wine rack") 6.
    assert heldout("  LED   Christmas Lights ")
    assert heldout("wireless mouse")
    assert not heldout("projector")
    assert not heldout("Wine Rack")


def test_crowdflower_generates_clicks_for_training_queries_only(tmp_path):
    landing = tmp_path / "landing"
    split = import_crowdflower(
        _crowdflower(tmp_path),
        landing,
        seed=3,
        start=date(2015, 1, 1),
        days=3,
        sessions_per_query=30,
    )
    assert split.train_queries == ["projector", "wine rack"]
    assert split.heldout_queries == ["LED christmas lights"]
    assert split.days == ["2015-01-01", "2015-01-02", "2015-01-03"]
    assert split.corpus.num_rows == 6  # distinct (title, description) pairs
    assert split.corpus.schema.remove_metadata() == CONTRACT_ITEMS
    judged = {
        (r["query"], r["item_id"]): (r["grade"], r["held_out"])
        for r in split.judgements.to_pylist()
    }
    assert len(judged) == 7
    rack = [i for (q, i), (g, _) in judged.items() if q == "wine rack" and g == 4]
    assert len(rack) == 1  # the duplicate judgement kept its higher grade
    assert all(h == (q == "LED christmas lights") for (q, _), (_, h) in judged.items())

    days = _read_days(landing)
    assert list(days) == split.days
    events = pa.concat_tables(e for e, _ in days.values()).to_pylist()
    for ds, (day_events, items) in days.items():
        assert day_events.schema.remove_metadata() == CONTRACT_EVENTS
        assert items.equals(split.corpus)
        assert {t.date().isoformat() for t in day_events.column("event_time").to_pylist()} <= {ds}
    assert {e["query"] for e in events} == {"projector", "wine rack"}
    requests = {}
    for e in events:
        requests.setdefault(e["request_id"], []).append(e)
    assert len(requests) == split.train_requests == 60
    for evs in requests.values():
        shown = {e["position"]: e["item_id"] for e in evs if e["event_type"] == "impression"}
        query = evs[0]["query"]
        assert sorted(shown.values()) == sorted(i for (q, i) in judged if q == query)
        assert sorted(shown) == list(range(len(shown)))
        for e in evs:
            if e["event_type"] != "impression":
                assert shown[e["position"]] == e["item_id"]
            if e["event_type"] == "cart":
                assert judged[(query, e["item_id"])][0] == 4
    clicks = [e for e in events if e["event_type"] == "click"]
    assert len(clicks) == split.train_clicks > 0
    assert len({e["user_id"] for e in events}) < len(requests)  # users come back


def test_crowdflower_is_deterministic_from_the_seed(tmp_path):
    src = _crowdflower(tmp_path)
    import_crowdflower(src, tmp_path / "a", seed=11, days=2, sessions_per_query=5)
    import_crowdflower(src, tmp_path / "b", seed=11, days=2, sessions_per_query=5)
    import_crowdflower(src, tmp_path / "c", seed=12, days=2, sessions_per_query=5)
    a, b, c = (_bytes(tmp_path / x) for x in "abc")
    assert a == b
    assert a != c


@pytest.mark.parametrize("value", ["5", "three", "2.5", ""])
def test_crowdflower_bad_relevance_is_rejected_by_line(tmp_path, value):
    rows = [*CF_ROWS[:4], [*CF_ROWS[4][:4], value, "0"], *CF_ROWS[5:]]
    with pytest.raises(ImportRejected) as err:
        import_crowdflower(_crowdflower(tmp_path, rows), tmp_path / "landing")
    # header, rows 1-4 with one description spanning two lines: the fifth row starts on line 7
    assert "train.csv line 7: column median_relevance:" in str(err.value)
    assert not (tmp_path / "landing").exists()


def test_crowdflower_blank_query_and_title_are_rejected(tmp_path):
    rows = [["1", " ", "Projector", "", "4", "0"], ["2", "projector", "", "", "4", "0"], *CF_ROWS]
    with pytest.raises(ImportRejected) as err:
        import_crowdflower(_crowdflower(tmp_path, rows), tmp_path / "landing")
    assert "train.csv line 2: column query:" in str(err.value)
    assert "train.csv line 3: column product_title:" in str(err.value)
