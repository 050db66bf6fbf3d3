"""Great Expectations checks (expectations/): good data passes, each kind of bad data is named.

Landing checks run on tiny hand-made Parquet files; mart checks on a warehouse built once by
dbt (module-scoped) and on copies of it that a test then damages.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ebr.settings import Settings, load_settings
from ebr.transform import dbt_build
from expectations.runner import DataQualityError, MissingInputError, check_landing, check_marts

DS = "2024-05-10"
PREVIOUS_DS = "2024-05-09"
EVENTS_FILE = f"landing/ds={DS}/events.parquet"
ITEMS_FILE = f"landing/ds={DS}/items.parquet"


# ---------------------------------------------------------------------------------------------
# Helpers


def make_settings(home: Path) -> Settings:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EBR_HOME", str(home))
        mp.delenv("EBR_EVAL_START_HOUR", raising=False)
        mp.delenv("EBR_MAX_CATALOGUE_DROP", raising=False)
        return load_settings()


def good_items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"i{k:02d}" for k in range(20)],
            "title": [f"item {k}" for k in range(20)],
            "leaf_category": [f"leaf{k % 4}" for k in range(20)],
            "top_category": [f"top{k % 2}" for k in range(20)],
            "brand": ["" if k % 5 == 0 else f"brand{k % 3}" for k in range(20)],
            "shop": [f"shop{k % 6}" for k in range(20)],
            "price": [float(k) + 0.5 for k in range(20)],
        }
    )


def good_events() -> pd.DataFrame:
    """~150 events: training requests (before 20:00) and evaluation requests (after), with
    clicks, carts and purchases; one event on an item missing from the catalogue (< 1%)."""
    rows = []
    day = datetime.fromisoformat(DS)
    for user in range(3):
        for k, hour in enumerate((7, 9, 11, 14, 16, 19, 20, 22)):
            rid = f"r{user}-{k}"
            start = day + timedelta(hours=hour, minutes=user)
            shown = [f"i{(user * 5 + k + j) % 20:02d}" for j in range(4)]
            query = f"query {(user + k) % 5}"
            for pos, item in enumerate(shown):
                rows.append((rid, start, f"u{user}", query, item, "impression", pos))
            rows.append(
                (rid, start + timedelta(seconds=5), f"u{user}", query, shown[1], "click", 1)
            )
            if k % 3 == 0:
                rows.append(
                    (rid, start + timedelta(seconds=60), f"u{user}", query, shown[1], "cart", 1)
                )
                rows.append(
                    (rid, start + timedelta(seconds=90), f"u{user}", query, shown[1], "purchase", 1)
                )
    rows.append(
        ("r-odd", day + timedelta(hours=12), "u9", "odd query", "i_unknown", "impression", 0)
    )
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
    frame["event_time"] = frame["event_time"].dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    frame["position"] = frame["position"].astype("int32")
    return frame


def write_landing(
    settings: Settings, events: pd.DataFrame | None, items: pd.DataFrame | None, ds: str = DS
) -> None:
    folder = settings.landing_day(ds)
    folder.mkdir(parents=True, exist_ok=True)
    if events is not None:
        events.to_parquet(folder / "events.parquet", index=False)
    if items is not None:
        items.to_parquet(folder / "items.parquet", index=False)


def assert_names(error: DataQualityError, *parts: str) -> None:
    message = str(error)
    for part in parts:
        assert part in message, f"{part!r} not in: {message}"


@dataclass
class Built:
    settings: Settings
    landing_summary: dict
    marts_summary: dict


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    """Good landing data for DS, checked, transformed by dbt, then its marts checked."""
    settings = make_settings(tmp_path_factory.mktemp("ebr"))
    write_landing(settings, good_events(), good_items())
    landing_summary = check_landing(DS, settings)
    dbt_build(DS, settings)
    marts_summary = check_marts(DS, settings)
    return Built(settings, landing_summary, marts_summary)


@pytest.fixture
def damaged_warehouse(built: Built, tmp_path):
    """A copy of the good warehouse and a function running SQL on it (read-write, closed)."""
    settings = make_settings(tmp_path / "ebr")
    settings.home.mkdir(parents=True)
    shutil.copy(built.settings.warehouse, settings.warehouse)

    def execute(*statements: str) -> Settings:
        connection = duckdb.connect(str(settings.warehouse))
        try:
            for statement in statements:
                connection.execute(statement)
        finally:
            connection.close()
        return settings

    return execute


# ---------------------------------------------------------------------------------------------
# Good data


def test_good_landing_passes_and_writes_a_report(built: Built) -> None:
    summary = built.landing_summary
    assert summary["success"] is True
    assert summary["rows"] == {"items": 20, "events": len(good_events())}
    assert summary["expectations_evaluated"] > 30
    report = built.settings.report_day(DS) / "dq_landing.json"
    assert json.loads(report.read_text())["success"] is True


def test_good_marts_pass_and_write_a_report(built: Built) -> None:
    summary = built.marts_summary
    assert summary["success"] is True
    rows = summary["rows"]
    assert rows["mart_training_examples"] > 0 and rows["mart_eval_examples"] > 0
    assert rows["mart_item_corpus"] == 20
    assert summary["expectations_evaluated"] > 60
    on_disk = json.loads((built.settings.report_day(DS) / "dq_marts.json").read_text())
    assert on_disk["rows"] == rows
    # The read-only connection was closed: a writer can open the warehouse in this process.
    duckdb.connect(str(built.settings.warehouse)).close()


# ---------------------------------------------------------------------------------------------
# Bad landing data


def _bad_event_type(events, items):
    events.loc[events.event_type == "click", "event_type"] = "klick"


def _null_user(events, items):
    events["user_id"] = events["user_id"].astype(object)
    events.loc[3, "user_id"] = None


def _outside_the_day(events, items):
    events.loc[0, "event_time"] = events.loc[0, "event_time"] + pd.Timedelta(days=1)


def _negative_price(events, items):
    items.loc[2, "price"] = -3.0


def _blank_query(events, items):
    events.loc[5, "query"] = "   "


def _negative_position(events, items):
    events.loc[1, "position"] = -1


def _duplicate_item(events, items):
    items.loc[4, "item_id"] = items.loc[3, "item_id"]


def _unknown_items(events, items):
    events.loc[events.index[:10], "item_id"] = "i_not_in_catalogue"


def _position_as_text(events, items):
    events["position"] = events["position"].astype(str)


def _missing_column(events, items):
    del events["query"]


def _set(table: str, column: str, value):
    """Damage: one value of ``column`` in the events or items becomes ``value``."""

    def damage(events, items):
        frame = events if table == "events" else items
        frame[column] = frame[column].astype(object)
        frame.loc[3, column] = value

    return damage


def _empty(table: str):
    def damage(events, items):
        frame = events if table == "events" else items
        frame.drop(frame.index, inplace=True)

    return damage


def _extra_column(events, items):
    events["session_id"] = "s1"


def _extra_item_column(events, items):
    items["colour"] = "red"


def _in_the_future(events, items):
    events.loc[0, "event_time"] = pd.Timestamp("2099-01-01", tz="UTC")


def _beyond_nanoseconds(events, items):
    # Past 2262: pandas cannot hold it in nanoseconds, so the runner leaves the column in micros.
    events.loc[0, "event_time"] = pd.Timestamp("2500-01-01", tz="UTC")


def _malformed_time(events, items):
    # A producer that writes timestamps as text, one of them not even a valid time.
    events["event_time"] = events["event_time"].dt.strftime("%Y-%m-%d %H:%M")
    events.loc[0, "event_time"] = "2024-05-10 25:61"


def _binary_query(events, items):
    # Parquet BYTE_ARRAY without the UTF-8 annotation: DuckDB reads it as BLOB, not text.
    events["query"] = events["query"].str.encode("utf-8")


BAD_LANDING = {
    "bad event_type": (
        _bad_event_type,
        [EVENTS_FILE, "column event_type", "expect_column_values_to_be_in_set", "'klick'"],
    ),
    "null user_id": (
        _null_user,
        [EVENTS_FILE, "column user_id", "expect_column_values_to_not_be_null", "1 null value"],
    ),
    "event outside the day": (
        _outside_the_day,
        [
            EVENTS_FILE,
            "column event_time",
            "expect_column_values_to_be_between",
            "2024-05-11T07:00:00",
        ],
    ),
    "negative price": (
        _negative_price,
        [ITEMS_FILE, "column price", "expect_column_values_to_be_between", "-3.0"],
    ),
    "blank query": (
        _blank_query,
        [EVENTS_FILE, "column query", "expect_column_values_to_match_regex", "'   '"],
    ),
    "negative position": (
        _negative_position,
        [EVENTS_FILE, "column position", "expect_column_values_to_be_between", "-1"],
    ),
    "duplicate item_id": (
        _duplicate_item,
        [ITEMS_FILE, "column item_id", "expect_column_values_to_be_unique", "'i03'"],
    ),
    "unknown items": (
        _unknown_items,
        [
            EVENTS_FILE,
            "column item_id",
            "expect_column_pair_values_to_be_equal",
            "'i_not_in_catalogue'",
            "allowed",
            "must be in the day's items.parquet",
        ],
    ),
    "position as text": (
        _position_as_text,
        [EVENTS_FILE, "column position", "expect_column_type_to_be", "int32"],
    ),
    "missing column": (
        _missing_column,
        [EVENTS_FILE, "columns: expect_table_columns_to_match_set failed (missing column 'query')"],
    ),
    "extra column in events": (
        _extra_column,
        [
            EVENTS_FILE,
            "columns: expect_table_columns_to_match_set failed (unexpected column 'session_id')",
        ],
    ),
    "extra column in items": (
        _extra_item_column,
        [
            ITEMS_FILE,
            "columns: expect_table_columns_to_match_set failed (unexpected column 'colour')",
        ],
    ),
    "empty events": (
        _empty("events"),
        [
            EVENTS_FILE,
            "table: expect_table_row_count_to_be_between failed (observed 0; expected [1, +inf])",
        ],
    ),
    "empty catalogue": (
        _empty("items"),
        [
            ITEMS_FILE,
            "table: expect_table_row_count_to_be_between failed (observed 0; expected [1, +inf])",
        ],
    ),
    "null request_id": (
        _set("events", "request_id", None),
        [EVENTS_FILE, "column request_id", "expect_column_values_to_not_be_null", "1 null value"],
    ),
    "null item_id": (
        _set("events", "item_id", None),
        [EVENTS_FILE, "column item_id", "expect_column_values_to_not_be_null", "1 null value"],
    ),
    "blank request_id": (
        _set("events", "request_id", ""),
        [EVENTS_FILE, "column request_id", "expect_column_values_to_match_regex", "''"],
    ),
    "blank user_id": (
        _set("events", "user_id", "  "),
        [EVENTS_FILE, "column user_id", "expect_column_values_to_match_regex", "'  '"],
    ),
    "blank item_id": (
        _set("events", "item_id", "\t"),
        [EVENTS_FILE, "column item_id", "expect_column_values_to_match_regex", "'\\t'"],
    ),
    "blank catalogue item_id": (
        _set("items", "item_id", " "),
        [ITEMS_FILE, "column item_id", "expect_column_values_to_match_regex", "' '"],
    ),
    "event in the future": (
        _in_the_future,
        [
            EVENTS_FILE,
            "column event_time",
            "expect_column_values_to_be_between",
            "2099-01-01T00:00:00",
        ],
    ),
    "event beyond the nanosecond range": (
        _beyond_nanoseconds,
        [
            EVENTS_FILE,
            "column event_time",
            "expect_column_values_to_be_between",
            "2500-01-01T00:00:00",
        ],
    ),
    "malformed event_time": (
        _malformed_time,
        [EVENTS_FILE, "column event_time", "expect_column_type_to_be", "expected datetime64"],
    ),
    "binary query": (
        _binary_query,
        [EVENTS_FILE, "column query", "expect_column_type_to_be", "expected str"],
    ),
}


@pytest.mark.reliability
@pytest.mark.parametrize("case", list(BAD_LANDING))
def test_bad_landing_data_is_named(case: str, tmp_path) -> None:
    damage, expected = BAD_LANDING[case]
    settings = make_settings(tmp_path / "ebr")
    events, items = good_events(), good_items()
    damage(events, items)
    write_landing(settings, events, items)

    with pytest.raises(DataQualityError) as raised:
        check_landing(DS, settings)

    assert_names(raised.value, *expected)
    # The failure is reported on disk too.
    report = json.loads((settings.report_day(DS) / "dq_landing.json").read_text())
    assert report["success"] is False and report["tables"]
    assert raised.value.summary == report


@pytest.mark.reliability
def test_a_mistyped_column_is_reported_once(tmp_path) -> None:
    # The value rules on event_time (range, not null) would fail or raise on text as well.
    settings = make_settings(tmp_path / "ebr")
    events, items = good_events(), good_items()
    _malformed_time(events, items)
    write_landing(settings, events, items)
    with pytest.raises(DataQualityError) as raised:
        check_landing(DS, settings)
    assert raised.value.failures == [
        f"{EVENTS_FILE}: column event_time: expect_column_type_to_be failed (observed 'str'; expected datetime64)"
    ]


@pytest.mark.reliability
def test_invalid_utf8_names_the_file_and_column(tmp_path) -> None:
    settings = make_settings(tmp_path / "ebr")
    write_landing(settings, None, good_items())
    table = pa.Table.from_pandas(good_events(), preserve_index=False)
    raw = [q.encode() for q in table["query"].to_pylist()]
    raw[7] = b"caf\xe9"  # Latin-1, not UTF-8
    # A view skips the UTF-8 validation a cast would do: the file holds what a broken producer wrote.
    query = pa.array(raw, type=pa.binary()).view(pa.string())
    table = table.set_column(table.schema.get_field_index("query"), "query", query)
    path = settings.landing_day(DS) / "events.parquet"
    pq.write_table(table, path)

    with pytest.raises(DataQualityError) as raised:
        check_landing(DS, settings)
    assert_names(raised.value, str(path), "column query: strings must be valid UTF-8", "caf")


@pytest.mark.reliability
def test_emoji_and_10_kb_queries_pass_the_landing_check(tmp_path) -> None:
    # Staging cuts long queries (docs/contracts.md); the landing check must not reject them.
    settings = make_settings(tmp_path / "ebr")
    events = good_events()
    events.loc[0, "query"] = "tênis 👟 corrida 🏃‍♀️"
    events.loc[1, "query"] = "sapato " * 1500
    assert len(events.loc[1, "query"].encode()) > 10_000
    write_landing(settings, events, good_items())
    assert check_landing(DS, settings)["success"] is True


@pytest.mark.reliability
def test_a_catalogue_that_drops_too_many_items_is_named(tmp_path) -> None:
    settings = make_settings(tmp_path / "ebr")
    assert settings.max_catalogue_drop == 0.2
    today = good_items()  # 20 items
    yesterday = pd.concat([today, today.assign(item_id=today.item_id + "_old")], ignore_index=True)
    write_landing(settings, good_events(), today)
    write_landing(settings, None, yesterday, ds=PREVIOUS_DS)  # 40 items: half of them gone today

    with pytest.raises(DataQualityError) as raised:
        check_landing(DS, settings)
    assert_names(
        raised.value,
        f"{ITEMS_FILE}: table: expect_table_row_count_to_be_between failed (observed 20; expected [32, +inf]; "
        "the previous day's catalogue had 40 items and may shrink by at most 20% (EBR_MAX_CATALOGUE_DROP)",
    )
    assert raised.value.failures[0].startswith(ITEMS_FILE)

    # Exactly the allowed drop (25 -> 20) passes.
    write_landing(settings, None, yesterday.head(25), ds=PREVIOUS_DS)
    assert check_landing(DS, settings)["success"] is True


def test_max_catalogue_drop_is_a_share(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("EBR_HOME", str(tmp_path))
    monkeypatch.setenv("EBR_MAX_CATALOGUE_DROP", "0.5")
    assert load_settings().max_catalogue_drop == 0.5
    monkeypatch.setenv("EBR_MAX_CATALOGUE_DROP", "50")
    with pytest.raises(ValueError, match="EBR_MAX_CATALOGUE_DROP must be in"):
        load_settings()


@pytest.mark.reliability
def test_missing_landing_file_names_the_path(tmp_path) -> None:
    settings = make_settings(tmp_path / "ebr")
    write_landing(settings, None, good_items())
    with pytest.raises(DataQualityError) as raised:
        check_landing(DS, settings)
    assert isinstance(raised.value, MissingInputError) and isinstance(
        raised.value, FileNotFoundError
    )
    assert_names(raised.value, str(settings.landing_day(DS) / "events.parquet"), "does not exist")


@pytest.mark.reliability
def test_missing_landing_day_names_the_folder(tmp_path) -> None:
    settings = make_settings(tmp_path / "ebr")
    with pytest.raises(MissingInputError) as raised:
        check_landing(DS, settings)
    assert_names(raised.value, str(settings.landing_day(DS)), "does not exist")


@pytest.mark.reliability
def test_unreadable_landing_file_names_the_path(tmp_path) -> None:
    settings = make_settings(tmp_path / "ebr")
    write_landing(settings, None, good_items())
    (settings.landing_day(DS) / "events.parquet").write_text("not parquet")
    with pytest.raises(DataQualityError) as raised:
        check_landing(DS, settings)
    assert_names(raised.value, "events.parquet", "cannot be read")


# ---------------------------------------------------------------------------------------------
# Bad marts


def test_empty_marts_are_named(damaged_warehouse) -> None:
    settings = damaged_warehouse(
        f"delete from mart_training_examples where ds = '{DS}'",
        f"delete from mart_eval_examples where ds = '{DS}'",
    )
    with pytest.raises(DataQualityError) as raised:
        check_marts(DS, settings)
    failures = raised.value.failures
    assert len(failures) == 2
    assert_names(raised.value, "mart_training_examples", "mart_eval_examples", f"ds={DS}")
    for line in failures:
        assert "table: expect_table_row_count_to_be_between failed (observed 0" in line
    assert json.loads((settings.report_day(DS) / "dq_marts.json").read_text())["success"] is False


def test_a_day_without_marts_fails(built: Built) -> None:
    with pytest.raises(DataQualityError) as raised:
        check_marts("2024-05-11", built.settings)
    assert_names(raised.value, "mart_training_examples", "expect_table_row_count_to_be_between")


def test_too_long_behaviour_list_is_named(damaged_warehouse) -> None:
    long_list = "[" + ", ".join(f"'x{k}'" for k in range(51)) + "]"
    settings = damaged_warehouse(
        f"update mart_training_examples set rt_items = {long_list} "
        f"where request_id = (select min(request_id) from mart_training_examples)"
    )
    with pytest.raises(DataQualityError) as raised:
        check_marts(DS, settings)
    assert_names(
        raised.value,
        "mart_training_examples",
        "column len(rt_items): expect_column_values_to_be_between failed (1 unexpected value, e.g. 51",
    )


def test_null_key_in_a_mart_is_named(damaged_warehouse) -> None:
    settings = damaged_warehouse("update mart_eval_examples set user_id = null")
    with pytest.raises(DataQualityError) as raised:
        check_marts(DS, settings)
    assert_names(
        raised.value, "mart_eval_examples", "column user_id", "expect_column_values_to_not_be_null"
    )


def test_missing_warehouse_or_mart_names_it(damaged_warehouse, tmp_path) -> None:
    nowhere = make_settings(tmp_path / "nowhere")
    with pytest.raises(MissingInputError) as raised:
        check_marts(DS, nowhere)
    assert_names(raised.value, str(nowhere.warehouse))

    settings = damaged_warehouse("drop table mart_item_corpus")
    with pytest.raises(MissingInputError) as raised:
        check_marts(DS, settings)
    assert_names(raised.value, "mart_item_corpus", "does not exist")


# ---------------------------------------------------------------------------------------------
# The package itself


def test_suites_cover_the_contract_rules() -> None:
    from expectations import suites

    def rules(suite) -> set[tuple[str, str | None]]:
        # A pair expectation is on its column_A (column_B is the runner's).
        return {
            (e.expectation_type, getattr(e, "column", getattr(e, "column_A", None)))
            for e in suite.expectations
        }

    events = rules(suites.landing_events_suite(DS))
    assert ("expect_table_columns_to_match_set", None) in events
    assert ("expect_table_row_count_to_be_between", None) in events
    for column in suites.LANDING_EVENT_COLUMNS:
        assert ("expect_column_type_to_be", column) in events
        assert ("expect_column_values_to_not_be_null", column) in events
    assert {
        ("expect_column_values_to_be_in_set", "event_type"),
        ("expect_column_pair_values_to_be_equal", "item_id"),
        ("expect_column_values_to_be_between", "event_time"),
        ("expect_column_values_to_be_between", "position"),
        *(
            ("expect_column_values_to_match_regex", c)
            for c in ("request_id", "user_id", "query", "item_id")
        ),
    } <= events
    items = rules(suites.landing_items_suite(DS))
    assert {
        ("expect_column_values_to_be_unique", "item_id"),
        ("expect_column_values_to_be_between", "price"),
    } <= items
    for table in suites.MART_TABLES:
        suite = suites.mart_suite(table, DS, 20)
        assert ("expect_table_row_count_to_be_between", None) in rules(suite)
    training = rules(suites.training_examples_suite(DS, 20))
    for name in suites.LIST_MAX_LENGTHS:
        assert ("expect_column_values_to_be_between", suites.length_column(name)) in training


def test_expectations_imports_neither_training_nor_indexing() -> None:
    import ast

    package = Path(__file__).resolve().parent.parent / "expectations"
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in {"training", "indexing"}, (
                    f"{source.name} imports {name}"
                )
