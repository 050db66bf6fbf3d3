"""Read-only access to the DuckDB warehouse that dbt builds.

DuckDB allows one writing process: readers open the file read-only and close it as soon as they
have their rows, so the next dbt run (another process) is never locked out.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from ebr.settings import Settings


@contextmanager
def reading(warehouse: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        yield con
    finally:
        con.close()


def query(settings: Settings, sql: str, params: Sequence = ()) -> pa.Table:
    """Rows of one statement as an Arrow table; user values go in params, never into sql."""
    with reading(settings.warehouse) as con:
        return con.sql(sql, params=list(params)).to_arrow_table()
