"""Run the Great Expectations suites of ``expectations.suites`` on a day's data.

Data is read with DuckDB (landing Parquet files; warehouse marts through a read-only connection
that is closed right after) into pandas DataFrames, and validated in an ephemeral GE context.
Each check writes its summary as JSON to ``settings.report_day(ds)``, keeps GE's own validation
result of each table beside it (``ge/<suite>.json``, read back by ``ebr docs expectations`` to
build Data Docs), and raises :class:`DataQualityError` when an expectation fails.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import great_expectations as gx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from great_expectations.core.expectation_validation_result import (
    ExpectationSuiteValidationResult,
)
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from ebr.settings import Settings
from expectations import suites

LANDING_REPORT = "dq_landing.json"
MARTS_REPORT = "dq_marts.json"
# GE's ExpectationSuiteValidationResult JSON of each table, one file per suite under the day's
# report folder, e.g. reports/ds=DAY/ge/landing_events.json: a rerun of a check replaces it.
GE_RESULTS = "ge"

_EXAMPLES = 3  # unexpected values quoted in a failure message


class DataQualityError(Exception):
    """A data-quality check failed; the message names file/table, column, rule and observation.

    ``failures`` lists one line per failed expectation; ``summary`` is the check's summary dict
    (also written as JSON to the day's report folder) when the data could be read.
    """

    def __init__(
        self,
        message: str,
        failures: list[str] | None = None,
        summary: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.failures = failures if failures is not None else [message]
        self.summary = summary


class MissingInputError(DataQualityError, FileNotFoundError):
    """An input (landing folder or file, warehouse, mart) does not exist."""


@dataclass
class TableReport:
    target: str  # what was checked, e.g. "landing/ds=2024-01-02/events.parquet"
    rows: int
    evaluated: int = 0
    successful: int = 0
    failures: list[str] = field(default_factory=list)
    # GE's own result, kept for Data Docs (``ge/<suite>.json``); not part of the summary.
    result: ExpectationSuiteValidationResult | None = field(default=None, repr=False)

    @property
    def success(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "rows": self.rows,
            "expectations_evaluated": self.evaluated,
            "expectations_successful": self.successful,
            "success": self.success,
            "failures": self.failures,
        }


# --------------------------------------------------------------------------------------------
# Public checks


def check_landing(ds: str, settings: Settings) -> dict[str, Any]:
    """Check the landing ``events.parquet`` and ``items.parquet`` of day ``ds``.

    Returns the summary (rows, expectations evaluated, success) also written to
    ``settings.report_day(ds) / "dq_landing.json"``; raises :class:`DataQualityError`
    (:class:`MissingInputError` for a missing folder or file).
    """
    date.fromisoformat(ds)
    day = settings.landing_day(ds)
    if not day.is_dir():
        raise MissingInputError(f"landing folder {day} does not exist (no data landed for ds={ds})")
    events_path, items_path = day / "events.parquet", day / "items.parquet"
    for path in (events_path, items_path):
        if not path.is_file():
            raise MissingInputError(f"landing file {path} does not exist")

    items = _read_parquet(items_path)
    events = _read_parquet(events_path)
    catalogue = items["item_id"].dropna() if "item_id" in items.columns else []
    events[suites.CATALOGUE_MATCH] = (
        events["item_id"].where(events["item_id"].isin(catalogue))
        if "item_id" in events.columns
        else None
    )
    yesterday = (date.fromisoformat(ds) - timedelta(days=1)).isoformat()
    previous_items = settings.landing_day(yesterday) / "items.parquet"
    previous_rows = _row_count(previous_items) if previous_items.is_file() else None

    context = _context()
    reports = {
        "items": _validate(
            context,
            items,
            suites.landing_items_suite(ds, previous_rows, settings.max_catalogue_drop),
            _display(items_path, settings),
        ),
        "events": _validate(
            context,
            events,
            suites.landing_events_suite(ds),
            _display(events_path, settings),
        ),
    }
    return _finish("landing", ds, reports, settings.report_day(ds) / LANDING_REPORT)


def check_marts(ds: str, settings: Settings) -> dict[str, Any]:
    """Check the marts of day ``ds`` in the warehouse (read-only connection, closed after).

    Returns the summary also written to ``settings.report_day(ds) / "dq_marts.json"``;
    raises :class:`DataQualityError` (:class:`MissingInputError` for a missing warehouse/mart).
    """
    date.fromisoformat(ds)
    warehouse = settings.warehouse
    if not warehouse.is_file():
        raise MissingInputError(f"warehouse {warehouse} does not exist (run dbt for ds={ds} first)")

    frames: dict[str, pd.DataFrame] = {}
    connection = duckdb.connect(str(warehouse), read_only=True)
    try:
        existing = {
            row[0]
            for row in connection.execute("select table_name from duckdb_tables()").fetchall()
        }
        for table in suites.MART_TABLES:
            if table not in existing:
                raise MissingInputError(f"{warehouse.name}:{table} does not exist in {warehouse}")
            frames[table] = _frame(connection, suites.mart_select_sql(table), [ds])
    finally:
        connection.close()

    context = _context()
    reports = {
        table: _validate(
            context,
            frame,
            suites.mart_suite(table, ds, settings.eval_start_hour),
            f"{warehouse.name}:{table}[ds={ds}]",
        )
        for table, frame in frames.items()
    }
    return _finish("marts", ds, reports, settings.report_day(ds) / MARTS_REPORT)


# --------------------------------------------------------------------------------------------
# Reading


def _frame(connection: duckdb.DuckDBPyConnection, sql: str, params: list) -> pd.DataFrame:
    # Through Arrow: DuckDB's own .df() trips pandas 3 deprecation warnings.
    frame = connection.sql(sql, params=params).to_arrow_table().to_pandas()
    for column in frame.columns:
        # Timestamps are UTC: compare them as naive UTC like the warehouse does.
        if isinstance(frame[column].dtype, pd.DatetimeTZDtype):
            frame[column] = frame[column].dt.tz_convert("UTC").dt.tz_localize(None)
        # GE compares only nanosecond timestamps with array ops; Arrow's microseconds went
        # through a Python call per value (4 s of a 1M-event day). A time outside the
        # nanosecond range (years 1678-2261) stays as it is: slower, and reported as out of range.
        if pd.api.types.is_datetime64_dtype(frame[column].dtype):
            try:
                frame[column] = frame[column].astype("datetime64[ns]")
            except pd.errors.OutOfBoundsDatetime:
                pass
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    connection = duckdb.connect()
    try:
        connection.execute("set TimeZone = 'UTC'")
        frame = _frame(
            connection, "select * from read_parquet(?, hive_partitioning = false)", [str(path)]
        )
    except duckdb.Error as error:
        # DuckDB quotes the invalid value but not its column: name the column(s) for the operator.
        bad = _invalid_utf8_columns(path) if "UTF8" in str(error) else []
        if bad:
            where = f"column{'s' if len(bad) > 1 else ''} {', '.join(bad)}"
            raise DataQualityError(
                f"{path}: {where}: strings must be valid UTF-8 ({error})"
            ) from error
        raise DataQualityError(f"{path}: cannot be read as Parquet ({error})") from error
    finally:
        connection.close()
    return frame


def _invalid_utf8_columns(path: Path) -> list[str]:
    table = pq.read_table(path)  # pyarrow reads string columns without validating them
    bad = []
    for name in table.column_names:
        if pa.types.is_string(table[name].type) or pa.types.is_large_string(table[name].type):
            try:
                table[name].validate(full=True)
            except pa.ArrowInvalid:
                bad.append(name)
    return bad


def _row_count(path: Path) -> int:
    try:
        return pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowException) as error:
        raise DataQualityError(f"{path}: cannot be read as Parquet ({error})") from error


def _display(path: Path, settings: Settings) -> str:
    try:
        return path.relative_to(settings.home).as_posix()
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# Validation


def _context():
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _validate(context, frame: pd.DataFrame, suite: gx.ExpectationSuite, target: str) -> TableReport:
    source = context.data_sources.add_pandas(name=suite.name)
    asset = source.add_dataframe_asset(name="frame")
    batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(
        batch_parameters={"dataframe": frame}
    )
    result = batch.validate(
        suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20}
    )

    report = TableReport(target=target, rows=len(frame), result=result)
    report.evaluated = int(result.statistics["evaluated_expectations"])
    report.successful = int(result.statistics["successful_expectations"])
    failed = [r for r in result.results if not r.success]
    # A missing or mistyped column is reported once, by its schema rule, not again by every
    # expectation on it (those fail, or raise, for the same reason).
    missing = {
        column
        for r in failed
        if r.expectation_config.type == "expect_table_columns_to_match_set"
        for column in _mismatched(r).get("missing", [])
    }
    mistyped = {
        r.expectation_config.kwargs["column"]
        for r in failed
        if r.expectation_config.type == "expect_column_type_to_be"
    }
    failed = [
        r
        for r in failed
        if _column(r.expectation_config) not in missing
        and (
            r.expectation_config.type == "expect_column_type_to_be"
            or _column(r.expectation_config) not in mistyped
        )
    ]
    # In suite order: schema (columns, types) first, then values.
    order: dict[tuple[str, str], int] = {}
    for k, expectation in enumerate(suite.expectations):
        order.setdefault(_key(expectation.configuration), k)
    failed.sort(key=lambda r: order.get(_key(r.expectation_config), len(order)))
    report.failures = [f"{target}: {_describe(r)}" for r in failed]
    return report


def _column(config) -> str | None:
    """The column an expectation is on (a pair's first: the other is the runner's)."""
    return config.kwargs.get("column", config.kwargs.get("column_A"))


def _key(config) -> tuple[str, str]:
    return config.type, str(_column(config) or config.kwargs.get("column_list"))


def _mismatched(result) -> dict[str, list[str]]:
    """``{"unexpected": [...], "missing": [...]}`` of a failed column-set expectation."""
    return ((result.result or {}).get("details") or {}).get("mismatched") or {}


def _describe(result) -> str:
    config = result.expectation_config
    kwargs = config.kwargs
    if _column(config) is not None:
        where = f"column {_column(config)}"
    elif "column_list" in kwargs:
        where = f"columns {', '.join(kwargs['column_list'])}"
    elif "column_set" in kwargs:
        where = "columns"
    else:
        where = "table"
    observed = _observed(result)
    # Why a bound is what it is, when the suite says (e.g. the previous day's catalogue size).
    note = (config.meta or {}).get("note")
    if note:
        observed += f"; {note}"
    return f"{where}: {config.type} failed ({observed})"


def _observed(result) -> str:
    error = _exception_message(result.exception_info)
    if error is not None:
        return f"error: {error}"
    kind = result.expectation_config.type
    kwargs = result.expectation_config.kwargs
    details = result.result or {}
    if "unexpected_count" in details:
        count = int(details["unexpected_count"])
        total = int(details.get("element_count") or 0)
        if kind == "expect_column_values_to_not_be_null":
            text = f"{count} null value{'s' if count != 1 else ''} in {total} rows"
        else:
            examples = _examples(details)
            text = f"{count} unexpected value{'s' if count != 1 else ''}"
            if examples:
                text += f", e.g. {examples}"
        if kwargs.get("mostly") is not None:
            text += (
                f"; {details.get('unexpected_percent', 0.0):.2f}% unexpected, "
                f"at most {100 * (1 - kwargs['mostly']):.2f}% allowed"
            )
        return text + _expected(kind, kwargs)
    if kind == "expect_table_columns_to_match_set":
        return "; ".join(
            f"{what} column{'s' if len(names) > 1 else ''} {', '.join(map(_fmt, names))}"
            for what, names in _mismatched(result).items()
            if names
        )
    if "observed_value" in details:
        return f"observed {_fmt(details['observed_value'])}" + _expected(kind, kwargs)
    return "no detail"


def _exception_message(info: Any) -> str | None:
    """GE reports an exception either flat or keyed by the metric that raised it."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message")).strip()
    for nested in info.values():
        if isinstance(nested, dict) and (
            nested.get("raised_exception") or nested.get("exception_message")
        ):
            return str(nested.get("exception_message")).strip()
    return None


def _expected(kind: str, kwargs: dict) -> str:
    if "between" in kind:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        left = "(" if kwargs.get("strict_min") else "["
        right = ")" if kwargs.get("strict_max") else "]"
        return f"; expected {left}{_bound(low, '-inf')}, {_bound(high, '+inf')}{right}"
    if kind == "expect_column_values_to_be_in_set" and len(kwargs.get("value_set", ())) <= 10:
        return f"; expected one of {', '.join(map(_fmt, kwargs['value_set']))}"
    if kind == "expect_column_type_to_be":
        return f"; expected {kwargs.get('type_')}"
    return ""


def _bound(value: Any, unbounded: str) -> str:
    if value is None:
        return unbounded
    if isinstance(value, float) and value.is_integer():  # GE stores int bounds as floats
        return str(int(value))
    return _fmt(value)


def _examples(details: dict) -> str:
    counts = details.get("partial_unexpected_counts") or []
    values = [c["value"] for c in counts] or list(details.get("partial_unexpected_list") or [])
    # A pair expectation's unexpected values are (column_A, column_B): the first is the file's.
    values = [v[0] if isinstance(v, (list, tuple)) else v for v in values]
    return ", ".join(_fmt(v) for v in values[:_EXAMPLES])


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, (datetime, date, pd.Timestamp)):
        return value.isoformat()
    if isinstance(value, str):
        return repr(value)
    return str(value)


# --------------------------------------------------------------------------------------------
# Reporting


def _finish(stage: str, ds: str, reports: dict[str, TableReport], path: Path) -> dict[str, Any]:
    failures = [line for report in reports.values() for line in report.failures]
    summary: dict[str, Any] = {
        "stage": stage,
        "ds": ds,
        "success": not failures,
        "rows": {name: report.rows for name, report in reports.items()},
        "expectations_evaluated": sum(r.evaluated for r in reports.values()),
        "expectations_failed": sum(r.evaluated - r.successful for r in reports.values()),
        "tables": {name: report.as_dict() for name, report in reports.items()},
        "checked_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "report": str(path),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    for report in reports.values():
        if report.result is not None:
            _keep_result(report, ds, summary["checked_at"], path.parent / GE_RESULTS)
    if failures:
        raise DataQualityError("; ".join(failures), failures=failures, summary=summary)
    return summary


def _keep_result(report: TableReport, ds: str, checked_at: str, folder: Path) -> None:
    """Write GE's validation result of one table to ``folder/<suite without the day>.json``.

    The run is named after the day (``ds=DAY``) and timed by the check, which is how Data Docs
    lists it; ``target`` says what was read.
    """
    result = report.result
    assert result is not None
    result.meta = {
        **(result.meta or {}),
        "run_id": {"run_name": f"ds={ds}", "run_time": checked_at},
        "validation_time": checked_at,
        "ds": ds,
        "target": report.target,
        "rows": report.rows,
    }
    kept = result.to_json_dict()
    folder.mkdir(parents=True, exist_ok=True)
    name = result.suite_name.removesuffix(f".{ds}")
    (folder / f"{name}.json").write_text(json.dumps(kept, default=str) + "\n")
