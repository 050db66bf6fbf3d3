"""Public logs -> landing days (docs/contracts.md, "Landing contract").

Every importer validates the whole source before writing anything: a bad row fails the import
with ImportRejected naming file, line, column and rule, and the landing folder is left as it was.
Output is deterministic, so re-importing into the same landing rewrites the same bytes.

- Best Buy (../shared/data/bestbuy): a real click log. Each click becomes one request; the split
  is by time (the last share of clicks is the test set), never random.
- CrowdFlower (../shared/data/crowdflower): graded query-product judgements, no log. Clicks are
  generated from the grades for the training queries; held-out queries never reach landing.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from ebr.synthetic import write_day

EVENTS_SCHEMA = pa.schema(
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
ITEMS_SCHEMA = pa.schema(
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
MAX_REPORTED = 10  # problems quoted in one ImportRejected message; the total is always given


class ImportRejected(ValueError):
    """The source breaks a rule; nothing was written to landing."""


@dataclass
class _Problems:
    """Rule violations collected over a whole source, so one run reports them together."""

    found: list[str] = field(default_factory=list)

    def add(self, file: str, line: int, column: str, rule: str) -> None:
        self.found.append(f"{file} line {line}: column {column}: {rule}")

    def raise_if_any(self, what: str) -> None:
        if self.found:
            shown = "\n".join(self.found[:MAX_REPORTED])
            more = len(self.found) - MAX_REPORTED
            tail = f"\n... and {more} more" if more > 0 else ""
            raise ImportRejected(f"{what}: {len(self.found)} problem(s)\n{shown}{tail}")


def _rows(
    path: Path, columns: Sequence[str], problems: _Problems
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, row) of a headed UTF-8 CSV; line is the file's own 1-based line where the row starts
    (quoted fields may span lines). Rows with a wrong field count go to problems, not out."""
    if not path.is_file():
        raise ImportRejected(f"{path}: file not found")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        try:
            header = reader.fieldnames or []
        except UnicodeDecodeError as e:
            raise ImportRejected(f"{path.name}: not UTF-8 ({e})") from e
        missing = [c for c in columns if c not in header]
        if missing:
            raise ImportRejected(f"{path.name} line 1: missing column(s) {', '.join(missing)}")
        line = reader.line_num + 1
        try:
            for row in reader:
                if None in row or None in row.values():
                    problems.add(path.name, line, "*", f"{len(header)} fields expected")
                else:
                    yield line, row
                line = reader.line_num + 1
        except UnicodeDecodeError as e:
            raise ImportRejected(f"{path.name} after line {line - 1}: not UTF-8 ({e})") from e


def _timestamp(text: str) -> datetime | None:
    """ISO timestamp as UTC; a time without an offset is taken as UTC (the logs give none)."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _require_text(
    row: dict[str, str], columns: Sequence[str], file: str, line: int, problems: _Problems
) -> bool:
    ok = True
    for column in columns:
        if not row[column].strip():
            problems.add(file, line, column, "is blank")
            ok = False
    return ok


def _write_days(landing: Path, events: pa.Table, items: pa.Table, days: Sequence[date]) -> None:
    """One landing folder per day; events must already be sorted by time."""
    day_of = [t.date() for t in events.column("event_time").to_pylist()]
    start = 0
    for ds in days:
        end = start
        while end < len(day_of) and day_of[end] == ds:
            end += 1
        write_day(landing, ds, events.slice(start, end - start), items)
        start = end


# --- Best Buy ----------------------------------------------------------------------------------

BESTBUY_CLICK_FILES = ("train.csv", "test.csv")  # a random third-party split of ONE log
BESTBUY_CLICK_COLUMNS = ("user", "sku", "query", "click_time", "query_time")
BESTBUY_PRODUCT_COLUMNS = ("sku", "name", "salePrice", "category_path")
BESTBUY_ROOT = "Best Buy"  # every category path starts with the store itself: no information


@dataclass
class BestBuySplit:
    cutoff: datetime  # event_time (UTC) of the first test click; train clicks are at or before it
    days: list[str]  # ISO days written to landing, oldest first: train and test period alike
    train_clicks: int
    test_clicks: int
    dropped_unknown_sku: int  # clicks on SKUs missing from products_parsed.csv (never scorable)
    users: int  # distinct users among the kept clicks
    items: int  # products in the catalogue snapshot written each day
    test: pa.Table  # request_id, user_id, query, item_id, event_time of the test clicks, by time


@dataclass(frozen=True)
class _Click:
    request_id: str
    event_time: datetime
    user: str
    query: str
    sku: str


def import_bestbuy(src: Path, landing: Path, test_share: float = 0.2) -> BestBuySplit:
    """Best Buy's click log -> landing days, split by time: the latest `test_share` of the clicks
    (by query_time, ties by request_id) is the test set. Every day is written, test period
    included, because later requests' point-in-time features are built from earlier events;
    the harness picks the evaluated requests with `cutoff` / `test`."""
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must lie in (0, 1), got {test_share}")
    problems = _Problems()
    items = _bestbuy_products(src / "products_parsed.csv", problems)
    clicks = [c for name in BESTBUY_CLICK_FILES for c in _bestbuy_clicks(src / name, problems)]
    problems.raise_if_any(f"Best Buy import from {src}")

    # Rule: a click on a SKU the catalogue lacks is dropped and counted (0.7% of the real log):
    # no method can retrieve an item that is not in the corpus, so it would only add noise.
    known = set(items.column("item_id").to_pylist())
    kept = sorted((c for c in clicks if c.sku in known), key=lambda c: (c.event_time, c.request_id))
    n_test = round(len(kept) * test_share)
    if n_test == 0 or n_test == len(kept):
        raise ImportRejected(
            f"Best Buy import from {src}: {len(kept)} usable clicks cannot be "
            f"split {1 - test_share:.0%}/{test_share:.0%} by time"
        )
    events = _bestbuy_events(kept)
    days = sorted({c.event_time.date() for c in kept})
    _write_days(landing, events, items, days)
    test = events.slice(len(kept) - n_test).select(
        ["request_id", "user_id", "query", "item_id", "event_time"]
    )
    return BestBuySplit(
        cutoff=kept[-n_test].event_time,
        days=[d.isoformat() for d in days],
        train_clicks=len(kept) - n_test,
        test_clicks=n_test,
        dropped_unknown_sku=len(clicks) - len(kept),
        users=len({c.user for c in kept}),
        items=items.num_rows,
        test=test,
    )


def _bestbuy_clicks(path: Path, problems: _Problems) -> list[_Click]:
    clicks = []
    for line, row in _rows(path, BESTBUY_CLICK_COLUMNS, problems):
        ok = _require_text(row, ("user", "sku", "query"), path.name, line, problems)
        times: dict[str, datetime] = {}
        for column in ("query_time", "click_time"):
            if (value := _timestamp(row[column])) is None:
                problems.add(path.name, line, column, f"{row[column]!r} is not a timestamp")
                ok = False
            else:
                times[column] = value
        if ok and times["click_time"] < times["query_time"]:
            # Holds for every row of the real log; a violation means shifted or swapped columns.
            problems.add(
                path.name,
                line,
                "click_time",
                f"{row['click_time']!r} is before query_time {row['query_time']!r}",
            )
            ok = False
        if ok:
            key = "\x1f".join(
                (row["user"], row["query_time"], row["query"], row["sku"], path.name, str(line))
            )
            clicks.append(
                _Click(
                    request_id="bb-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:20],
                    event_time=times["query_time"],
                    user=row["user"].strip(),
                    query=row["query"],
                    sku=row["sku"].strip(),
                )
            )
    return clicks


def _bestbuy_events(clicks: Sequence[_Click]) -> pa.Table:
    # The log holds clicks only: no impressions, no ranks. Each click is its own request at the
    # query's time (a request's time is its first event), shown at position 0 by convention.
    # click_time is not used: it can fall after midnight, which would split a request over days.
    n = len(clicks)
    return pa.table(
        {
            "request_id": [c.request_id for c in clicks],
            "event_time": [c.event_time for c in clicks],
            "user_id": [c.user for c in clicks],
            "query": [c.query for c in clicks],
            "item_id": [c.sku for c in clicks],
            "event_type": ["click"] * n,
            "position": [0] * n,
        },
        schema=EVENTS_SCHEMA,
    )


def _bestbuy_products(path: Path, problems: _Problems) -> pa.Table:
    rows: dict[str, tuple[str, str, str, float]] = {}
    for line, row in _rows(path, BESTBUY_PRODUCT_COLUMNS, problems):
        ok = _require_text(row, ("sku", "name", "category_path"), path.name, line, problems)
        price = _price(row["salePrice"])
        if price is None:
            problems.add(
                path.name, line, "salePrice", f"{row['salePrice']!r} is not a finite number >= 0"
            )
            ok = False
        sku = row["sku"].strip()
        if ok and sku in rows:
            problems.add(path.name, line, "sku", f"{sku!r} is a duplicate")
            ok = False
        if ok and price is not None:
            top, leaf = _categories(row["category_path"])
            rows[sku] = (row["name"], leaf, top, price)
    skus = sorted(rows)
    return pa.table(
        {
            "item_id": skus,
            "title": [rows[s][0] for s in skus],
            "leaf_category": [rows[s][1] for s in skus],
            "top_category": [rows[s][2] for s in skus],
            "brand": [""] * len(skus),  # the product file has no brand
            "shop": ["bestbuy"] * len(skus),
            "price": [rows[s][3] for s in skus],
        },
        schema=ITEMS_SCHEMA,
    )


def _price(text: str) -> float | None:
    try:
        price = float(text)
    except ValueError:
        return None
    return price if math.isfinite(price) and price >= 0 else None


def _categories(path: str) -> tuple[str, str]:
    """(top, leaf) of "Best Buy > Video Games > Xbox 360 > Xbox 360 Games": the store root is
    skipped, so top is "Video Games" and leaf "Xbox 360 Games"."""
    parts = [p.strip() for p in path.split(">") if p.strip()]
    if len(parts) > 1 and parts[0] == BESTBUY_ROOT:
        parts = parts[1:]
    return parts[0], parts[-1]


# --- CrowdFlower -------------------------------------------------------------------------------

CROWDFLOWER_COLUMNS = ("query", "product_title", "product_description", "median_relevance")
# P(click) at position 0 by grade (index = grade; 0 unused). Fully relevant products draw most
# clicks, irrelevant ones a few (users misclick and explore), as in graded-to-click simulations.
CLICK_PROB_BY_GRADE = np.array([0.0, 0.02, 0.08, 0.25, 0.55])
POSITION_DECAY = 0.15  # P(click) is divided by (1 + POSITION_DECAY * position): position bias
CART_PROB = 0.15  # P(cart | click on a grade-4 product): the strongest label now and then
REQUESTS_PER_USER = 5  # user pool = requests / this, so users repeat and have behaviour
# Requests start up to 10 minutes before midnight, so their clicks and carts stay in the day.
CROWDFLOWER_SECONDS = 86_400 - 600
MAX_CLICK_DELAY_S = 300
HELDOUT_BUCKETS = 3  # of 10 md5 buckets


@dataclass
class CrowdFlowerSplit:
    corpus: pa.Table  # every judged product, ITEMS_SCHEMA, by item_id: each day's catalogue
    judgements: pa.Table  # query, item_id, grade (1..4), held_out; one row per query and product
    train_queries: list[str]  # sorted; clicks are generated for these only
    heldout_queries: list[str]  # sorted; never in landing
    days: list[str]  # ISO days written, oldest first
    train_requests: int
    train_clicks: int


def heldout(query: str) -> bool:
    """Whether a query is held out: a hash of its lowercased, whitespace-collapsed text, so the
    split is stable across runs and machines and case or spacing variants fall on one side."""
    key = " ".join(query.lower().split())
    return int(hashlib.md5(key.encode("utf-8")).hexdigest(), 16) % 10 < HELDOUT_BUCKETS


def crowdflower_item_id(title: str, description: str) -> str:
    return "cf-" + hashlib.md5(f"{title}\x00{description}".encode()).hexdigest()[:16]


def import_crowdflower(
    src: Path,
    landing: Path,
    seed: int = 7,
    start: date = date(2015, 1, 1),
    days: int = 7,
    sessions_per_query: int = 40,
) -> CrowdFlowerSplit:
    """CrowdFlower judgements -> a corpus, graded labels, and generated click logs over `days`
    days from `start` for the training queries (deterministic from `seed`)."""
    if days < 1 or sessions_per_query < 1:
        raise ValueError(
            f"days and sessions_per_query must be >= 1, got {days}, {sessions_per_query}"
        )
    problems = _Problems()
    titles, grades = _crowdflower_judgements(src / "train.csv", problems)
    problems.raise_if_any(f"CrowdFlower import from {src}")

    corpus = _crowdflower_corpus(titles)
    judgements = pa.table(
        {
            "query": [q for q, _ in grades],
            "item_id": [i for _, i in grades],
            "grade": pa.array(list(grades.values()), pa.int32()),
            "held_out": [heldout(q) for q, _ in grades],
        }
    )
    queries = sorted({q for q, _ in grades})
    train_queries = [q for q in queries if not heldout(q)]
    events = _crowdflower_events(train_queries, grades, seed, start, days, sessions_per_query)
    day_list = [start + timedelta(days=d) for d in range(days)]
    _write_days(landing, events, corpus, day_list)
    return CrowdFlowerSplit(
        corpus=corpus,
        judgements=judgements,
        train_queries=train_queries,
        heldout_queries=[q for q in queries if heldout(q)],
        days=[d.isoformat() for d in day_list],
        train_requests=len(train_queries) * sessions_per_query,
        train_clicks=Counter(events.column("event_type").to_pylist())["click"],
    )


def _crowdflower_judgements(
    path: Path, problems: _Problems
) -> tuple[dict[str, str], dict[tuple[str, str], int]]:
    """({item_id: title}, {(query, item_id): grade}) sorted by key. A product judged twice for
    one query (44 pairs in the real data, some with different grades) keeps its highest grade."""
    titles: dict[str, str] = {}
    grades: dict[tuple[str, str], int] = {}
    for line, row in _rows(path, CROWDFLOWER_COLUMNS, problems):
        ok = _require_text(row, ("query", "product_title"), path.name, line, problems)
        grade = _grade(row["median_relevance"])
        if grade is None:
            problems.add(
                path.name,
                line,
                "median_relevance",
                f"{row['median_relevance']!r} is not an integer in 1..4",
            )
            ok = False
        if ok and grade is not None:
            item = crowdflower_item_id(row["product_title"], row["product_description"])
            titles[item] = row["product_title"]
            key = (row["query"], item)
            grades[key] = max(grade, grades.get(key, 0))
    return dict(sorted(titles.items())), dict(sorted(grades.items()))


def _grade(text: str) -> int | None:
    try:
        grade = int(text.strip())
    except ValueError:
        return None
    return grade if 1 <= grade <= 4 else None


def _crowdflower_corpus(titles: dict[str, str]) -> pa.Table:
    n = len(titles)
    return pa.table(
        {
            "item_id": list(titles),
            "title": list(titles.values()),
            # The data has no categories, brands, shops or prices: constants mean "unknown".
            "leaf_category": ["crowdflower"] * n,
            "top_category": ["crowdflower"] * n,
            "brand": [""] * n,
            "shop": ["crowdflower"] * n,
            "price": [0.0] * n,
        },
        schema=ITEMS_SCHEMA,
    )


def _crowdflower_events(
    queries: Sequence[str],
    grades: dict[tuple[str, str], int],
    seed: int,
    start: date,
    days: int,
    sessions: int,
) -> pa.Table:
    """Per query, `sessions` requests by users of a shared pool: the query's judged products are
    impressed in a random order, then clicked by grade and position; some grade-4 clicks carted."""
    judged: dict[str, list[tuple[str, int]]] = {}
    for (query, item), grade in grades.items():
        judged.setdefault(query, []).append((item, grade))
    rng = np.random.default_rng(seed)
    n_users = max(1, len(queries) * sessions // REQUESTS_PER_USER)
    epoch = datetime(start.year, start.month, start.day, tzinfo=UTC)
    rows: list[tuple] = []
    for qi, query in enumerate(queries):
        items = [i for i, _ in judged[query]]
        item_grades = np.array([g for _, g in judged[query]])
        for s in range(sessions):
            request = f"cf-{qi:04d}-{s:04d}"
            user = f"cf-u{int(rng.integers(n_users))}"
            t = epoch + timedelta(
                days=int(rng.integers(days)),
                microseconds=int(rng.integers(CROWDFLOWER_SECONDS * 1_000_000)),
            )
            order = rng.permutation(len(items))
            decay = 1 + POSITION_DECAY * np.arange(len(order))
            p_click = CLICK_PROB_BY_GRADE[item_grades[order]] / decay
            clicked = rng.random(len(order)) < p_click
            carted = clicked & (item_grades[order] == 4) & (rng.random(len(order)) < CART_PROB)
            for pos, k in enumerate(order):
                rows.append((request, t, user, query, items[k], "impression", pos))
                # Deeper results are clicked later; capped so a cart (one minute on) stays
                # within the 10 minutes left before midnight.
                clicked_at = t + timedelta(seconds=5 + min(pos, MAX_CLICK_DELAY_S))
                if clicked[pos]:
                    rows.append((request, clicked_at, user, query, items[k], "click", pos))
                if carted[pos]:
                    rows.append(
                        (
                            request,
                            clicked_at + timedelta(seconds=60),
                            user,
                            query,
                            items[k],
                            "cart",
                            pos,
                        )
                    )
    rows.sort(key=lambda r: (r[1], r[0], r[6]))
    return pa.table(
        {name: [r[j] for r in rows] for j, name in enumerate(EVENTS_SCHEMA.names)},
        schema=EVENTS_SCHEMA,
    )
