"""Great Expectations 1.x suites for the landing files and the warehouse marts.

The suites check pandas DataFrames (see ``expectations.runner`` for how they are read): GE
cannot reach DuckDB through SQLAlchemy here. Rules follow docs/contracts.md.

List columns of the marts are checked through their lengths: the mart queries below select
``len(<list>)`` under the name ``len(<list>)``, which is what the suites refer to.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import date, datetime, time, timedelta

import great_expectations as gx
import great_expectations.expectations as gxe

EVENT_TYPES: tuple[str, ...] = ("impression", "click", "cart", "purchase")
LABEL_EVENTS: tuple[str, ...] = ("click", "cart", "purchase")

# Landing columns and their pandas dtypes once read (event_time is normalised to naive UTC).
LANDING_EVENT_COLUMNS: dict[str, str] = {
    "request_id": "str",
    "event_time": "datetime64",
    "user_id": "str",
    "query": "str",
    "item_id": "str",
    "event_type": "str",
    "position": "int32",
}
LANDING_ITEM_COLUMNS: dict[str, str] = {
    "item_id": "str",
    "title": "str",
    "leaf_category": "str",
    "top_category": "str",
    "brand": "str",
    "shop": "str",
    "price": "float64",
}

# Share of a day's event item ids that must be in that day's catalogue.
KNOWN_ITEM_SHARE = 0.99
# The runner's column beside the events' own (``expectations.runner.check_landing``): the event's
# item_id where the day's items.parquet has it, null where not. The suite compares the two: a
# value set of the whole catalogue (200k ids at the medium bench profile) is copied by GE every
# time it reads the expectation, and cost 27 of the check's 35 s at medium.
CATALOGUE_MATCH = "item_id in items.parquet"

# Longest allowed behaviour lists (docs/contracts.md, ModelConfig).
LIST_MAX_LENGTHS: dict[str, int] = {
    "rt_items": 50,
    "st_items": 100,
    **{
        f"lt_{action}_{attr}": 100
        for action in ("click", "cart", "purchase")
        for attr in ("item", "shop", "leaf", "brand")
    },
    "past_queries": 20,
}

MART_TABLES: tuple[str, ...] = (
    "mart_training_examples",
    "mart_eval_examples",
    "mart_item_corpus",
    "mart_user_features",
)

_REQUEST_KEYS = ("ds", "request_id", "user_id", "request_time", "query")


def length_column(list_column: str) -> str:
    """Name of the column holding the length of a list column in the mart DataFrames."""
    return f"len({list_column})"


def mart_select_sql(table: str) -> str:
    """DuckDB query (one ``?`` parameter: the day) selecting what the suite of ``table`` checks."""
    if table == "mart_item_corpus":
        columns = [
            "ds",
            "item_id",
            "title",
            "leaf_category",
            "top_category",
            "brand",
            "shop",
            "price",
        ]
    else:
        lists = list(LIST_MAX_LENGTHS)
        if table == "mart_training_examples":
            columns = [*_REQUEST_KEYS, "item_id", "label_event"]
        elif table == "mart_eval_examples":
            columns = list(_REQUEST_KEYS)
            lists = ["clicked_items", "purchased_items", *lists]
        elif table == "mart_user_features":
            columns = ["ds", "user_id", "as_of"]
        else:
            raise ValueError(f"unknown mart {table!r}; expected one of {MART_TABLES}")
        columns += [f'len({name}) as "{length_column(name)}"' for name in lists]
    return f"select {', '.join(columns)} from {table} where ds = ?"


def _day_bounds(ds: str) -> tuple[datetime, datetime]:
    start = datetime.combine(date.fromisoformat(ds), time())
    return start, start + timedelta(days=1)


def _eval_cutoff(ds: str, eval_start_hour: int) -> datetime:
    return _day_bounds(ds)[0] + timedelta(hours=eval_start_hour)


def _suite(name: str, expectations: list[gxe.Expectation]) -> gx.ExpectationSuite:
    # Passed to the constructor: suite.add_expectation() would need an active data context.
    return gx.ExpectationSuite(name=name, expectations=expectations)


def _schema(columns: dict[str, str], derived: Collection[str] = ()) -> list[gxe.Expectation]:
    """The contract's columns and types (``derived``: columns the runner adds to the frame)."""
    return [
        # Exactly the contract's columns: a missing one breaks the transform, and an extra one is
        # schema drift upstream that someone should look at before staging silently drops it.
        gxe.ExpectTableColumnsToMatchSet(column_set=[*columns, *derived], exact_match=True),
        *(
            gxe.ExpectColumnTypeToBe(column=column, type_=type_)
            for column, type_ in columns.items()
        ),
    ]


def _not_null(columns: Collection[str]) -> list[gxe.Expectation]:
    return [gxe.ExpectColumnValuesToNotBeNull(column=column) for column in columns]


def _not_blank(columns: Collection[str]) -> list[gxe.Expectation]:
    # Staging trims these: "" or whitespace would become one shared, meaningless key.
    return [gxe.ExpectColumnValuesToMatchRegex(column=column, regex=r"\S") for column in columns]


def landing_events_suite(
    ds: str, known_item_share: float = KNOWN_ITEM_SHARE
) -> gx.ExpectationSuite:
    """Landing ``events.parquet`` of day ``ds``, read with the runner's CATALOGUE_MATCH column."""
    start, end = _day_bounds(ds)
    return _suite(
        f"landing_events.{ds}",
        [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            *_schema(LANDING_EVENT_COLUMNS, derived=[CATALOGUE_MATCH]),
            *_not_null(LANDING_EVENT_COLUMNS),
            *_not_blank(["request_id", "user_id", "query", "item_id"]),
            gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
            gxe.ExpectColumnValuesToBeBetween(
                column="event_time", min_value=start, max_value=end, strict_max=True
            ),
            gxe.ExpectColumnValuesToBeBetween(column="position", min_value=0),
            gxe.ExpectColumnPairValuesToBeEqual(
                column_A="item_id",
                column_B=CATALOGUE_MATCH,
                mostly=known_item_share,
                meta={"note": "an event's item_id must be in the day's items.parquet"},
            ),
        ],
    )


def landing_items_suite(
    ds: str,
    previous_rows: int | None = None,
    max_drop: float = 0.0,
) -> gx.ExpectationSuite:
    """Landing ``items.parquet`` (the catalogue snapshot) of day ``ds``.

    ``previous_rows``: the row count of the previous day's catalogue, when it landed; the day's
    may be at most ``max_drop`` (a share, ``settings.max_catalogue_drop``) smaller. Half a
    catalogue gone overnight is far more often a broken export than a real clear-out, and would
    drop those items from the index.
    """
    min_rows, meta = 1, None
    if previous_rows:
        # Rounded first: 10 * (1 - 0.3) is 7.000000000000001, which must still allow 7.
        min_rows = max(1, math.ceil(round(previous_rows * (1 - max_drop), 9)))
        meta = {
            "note": f"the previous day's catalogue had {previous_rows} items and may shrink by "
            f"at most {100 * max_drop:g}% (EBR_MAX_CATALOGUE_DROP)"
        }
    return _suite(
        f"landing_items.{ds}",
        [
            gxe.ExpectTableRowCountToBeBetween(min_value=min_rows, meta=meta),
            *_schema(LANDING_ITEM_COLUMNS),
            *_not_null(LANDING_ITEM_COLUMNS),
            *_not_blank(["item_id"]),
            gxe.ExpectColumnValuesToBeUnique(column="item_id"),
            gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0),
        ],
    )


def _behaviour_lists() -> list[gxe.Expectation]:
    """Every behaviour list is non-NULL (its length is) and within its contract length."""
    out: list[gxe.Expectation] = []
    for name, max_length in LIST_MAX_LENGTHS.items():
        column = length_column(name)
        out.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
        out.append(
            gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, max_value=max_length)
        )
    return out


def training_examples_suite(
    ds: str, eval_start_hour: int, min_rows: int = 1
) -> gx.ExpectationSuite:
    """``mart_training_examples`` of day ``ds``: requests before ``eval_start_hour``."""
    start, _ = _day_bounds(ds)
    return _suite(
        f"mart_training_examples.{ds}",
        [
            gxe.ExpectTableRowCountToBeBetween(min_value=min_rows),
            *_not_null([*_REQUEST_KEYS, "item_id", "label_event"]),
            gxe.ExpectColumnValuesToBeInSet(column="label_event", value_set=list(LABEL_EVENTS)),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["request_id", "item_id"]),
            gxe.ExpectColumnValuesToBeBetween(
                column="request_time",
                min_value=start,
                max_value=_eval_cutoff(ds, eval_start_hour),
                strict_max=True,
            ),
            *_behaviour_lists(),
        ],
    )


def eval_examples_suite(ds: str, eval_start_hour: int, min_rows: int = 1) -> gx.ExpectationSuite:
    """``mart_eval_examples`` of day ``ds``: requests at or after ``eval_start_hour``."""
    _, end = _day_bounds(ds)
    return _suite(
        f"mart_eval_examples.{ds}",
        [
            gxe.ExpectTableRowCountToBeBetween(min_value=min_rows),
            *_not_null(_REQUEST_KEYS),
            gxe.ExpectColumnValuesToBeUnique(column="request_id"),
            gxe.ExpectColumnValuesToBeBetween(
                column="request_time",
                min_value=_eval_cutoff(ds, eval_start_hour),
                max_value=end,
                strict_max=True,
            ),
            gxe.ExpectColumnValuesToBeBetween(column=length_column("clicked_items"), min_value=1),
            gxe.ExpectColumnValuesToNotBeNull(column=length_column("purchased_items")),
            *_behaviour_lists(),
        ],
    )


def item_corpus_suite(ds: str, min_rows: int = 1) -> gx.ExpectationSuite:
    """``mart_item_corpus`` of day ``ds``."""
    return _suite(
        f"mart_item_corpus.{ds}",
        [
            gxe.ExpectTableRowCountToBeBetween(min_value=min_rows),
            *_not_null(
                [
                    "ds",
                    "item_id",
                    "title",
                    "leaf_category",
                    "top_category",
                    "brand",
                    "shop",
                    "price",
                ]
            ),
            gxe.ExpectColumnValuesToBeUnique(column="item_id"),
            gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0),
        ],
    )


def user_features_suite(ds: str, min_rows: int = 1) -> gx.ExpectationSuite:
    """``mart_user_features`` of day ``ds``: one row per active user, as of the end of the day."""
    _, end = _day_bounds(ds)
    return _suite(
        f"mart_user_features.{ds}",
        [
            gxe.ExpectTableRowCountToBeBetween(min_value=min_rows),
            *_not_null(["ds", "user_id", "as_of"]),
            gxe.ExpectColumnValuesToBeUnique(column="user_id"),
            gxe.ExpectColumnValuesToBeBetween(column="as_of", min_value=end, max_value=end),
            *_behaviour_lists(),
        ],
    )


def mart_suite(table: str, ds: str, eval_start_hour: int) -> gx.ExpectationSuite:
    """The suite of one of :data:`MART_TABLES`."""
    # eval_start_hour 24 holds nothing out (an evaluation import splits by time over the whole
    # log instead) and 0 holds out everything: the emptied mart may then be empty.
    if table == "mart_training_examples":
        return training_examples_suite(ds, eval_start_hour, min_rows=int(eval_start_hour > 0))
    if table == "mart_eval_examples":
        return eval_examples_suite(ds, eval_start_hour, min_rows=int(eval_start_hour < 24))
    if table == "mart_item_corpus":
        return item_corpus_suite(ds)
    if table == "mart_user_features":
        return user_features_suite(ds)
    raise ValueError(f"unknown mart {table!r}; expected one of {MART_TABLES}")
