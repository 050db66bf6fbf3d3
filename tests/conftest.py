import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Airflow reads AIRFLOW_HOME when first imported: point it at a throwaway home before any test
# imports it, so tests never touch a developer's ./.airflow.
REPO = Path(__file__).resolve().parent.parent
AIRFLOW_HOME = tempfile.mkdtemp(prefix="ebr-test-airflow-")
os.environ["AIRFLOW_HOME"] = AIRFLOW_HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__COSMOS__ENABLE_TELEMETRY"] = "False"  # no network here, nor in CI

from ebr.settings import Settings, load_settings  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    """The throwaway Airflow home goes with the session (each run left one in /tmp before)."""
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    """Settings whose whole state (landing, warehouse, models, Milvus Lite, reports) is in tmp_path."""
    monkeypatch.setenv("EBR_HOME", str(tmp_path / "ebr"))
    monkeypatch.delenv("EBR_MILVUS_URI", raising=False)
    s = load_settings()
    s.home.mkdir(parents=True)
    return s


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Saves a module's trained models as versions, each model's query encoder exported once
    (tests/exported.py)."""
    from exported import Exported

    return Exported(tmp_path_factory.mktemp("encoders"))


@pytest.fixture(autouse=True)
def _restore_logging():
    """ebr.cli.main (run in-process by some tests) points the root logger at the stream pytest
    captures and lowers its level to INFO: later tests would log into that closed stream and
    capture other loggers' INFO records. Every test leaves the root logger as it found it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata database (SQLite) for dag.test()."""
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)
    return Path(os.environ["AIRFLOW_HOME"])


# ---------------------------------------------------------------------------------------------
# `make reliability`: the operations cases (tests marked reliability) as one table, by area.
# Tests add figures with record_property: queries_served, failed_queries, empty_results,
# version_mismatches (swaps under load) and rows_lost (reruns, crashes).

_FIGURES = ("queries_served", "failed_queries", "empty_results", "version_mismatches", "rows_lost")
_AREAS = {
    "test_backfill": "backfills (real scheduler)",
    "test_transforms": "reruns, staging rules",
    "test_operations": "rollback, canary, validation",
    "test_crash_safety": "SIGKILL at each stage",
    "test_expectations": "bad input",
    "test_dag_e2e": "bad input through the DAG",
    "test_swap_under_load": "swaps under load",
    "test_regression_gate": "regressed candidates",
    "test_client": "injection into filters",
}
_reliability: dict[str, dict[str, int]] = {}
# Rates are figures of the machine, not pass/fail: printed under the table, never summed.
_paces: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if item.get_closest_marker("reliability") is None:
        return
    # A case counts once: its call, or the setup that failed before it.
    if report.when == "call" or (report.when == "setup" and not report.passed):
        area = _reliability.setdefault(
            item.module.__name__, dict.fromkeys(("cases", "passed", *_FIGURES), 0)
        )
        area["cases"] += 1
        area["passed"] += int(report.passed)
        props = dict(item.user_properties)
        for name, value in props.items():
            if name in _FIGURES:
                area[name] += int(value)
        if "queries_per_second" in props:
            _paces.append(
                f"{item.name}: the reader ran {props['queries_per_second']} queries/s "
                f"over {props.get('load_seconds', '?')} s"
            )


def pytest_terminal_summary(terminalreporter):
    if not _reliability:
        return
    header = ["area", "cases", "passed", *_FIGURES]
    rows = [
        [_AREAS.get(module, module), *(str(v) for v in figures.values())]
        for module, figures in sorted(_reliability.items())
    ]
    totals = [sum(int(row[k]) for row in rows) for k in range(1, len(header))]
    rows.append(["total", *map(str, totals)])
    terminalreporter.section("reliability")
    terminalreporter.write_line("| " + " | ".join(header) + " |")
    terminalreporter.write_line("|" + "---|" * len(header))
    for row in rows:
        terminalreporter.write_line("| " + " | ".join(row) + " |")
    for line in _paces:
        terminalreporter.write_line(line)
