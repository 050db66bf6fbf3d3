"""The real ebr_daily DAG, run with dag.test() over two small synthetic days."""

import importlib.util
import json
from pathlib import Path
from datetime import date, datetime, time, timedelta, timezone

import pytest

from ebr.settings import load_settings
from ebr.synthetic import generate

pytestmark = pytest.mark.slow
DAG_FILE = Path(__file__).resolve().parent.parent / "dags" / "ebr_daily.py"


def _load_dag():
    """Imports the DAG file afresh, so it reads the settings of this test's environment."""
    spec = importlib.util.spec_from_file_location("ebr_daily_under_test", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def _run(dag, ds: date):
    # a daily data-interval run is dated by the end of its interval
    return dag.test(logical_date=datetime.combine(ds + timedelta(days=1), time(), tzinfo=timezone.utc))


def test_two_days_through_the_real_dag(tmp_path, monkeypatch, airflow_db):
    monkeypatch.setenv("EBR_HOME", str(tmp_path / "ebr"))
    monkeypatch.setenv("EBR_DIM", "32")
    monkeypatch.setenv("EBR_EPOCHS", "12")  # ~1k examples a tiny day: enough steps to learn titles
    monkeypatch.setenv("EBR_BATCH_SIZE", "64")
    monkeypatch.setenv("EBR_RECALL_FLOOR", "0.01")
    monkeypatch.setenv("EBR_REGRESSION_MARGIN", "0.5")  # the gate's own logic has its own tests
    settings = load_settings()
    generate(settings.landing, date(2026, 1, 1), 2, "tiny", settings.seed)
    dag = _load_dag()

    from ebr.client import RetrievalClient
    from indexing import store
    from training.artifact import load_meta

    assert _run(dag, date(2026, 1, 1)).state == "success"
    with store.connect(settings) as client:
        first = store.live(client, settings.alias)
    assert (first.name, first.model_version, first.ds) == ("items_20260101_v1", 1, "2026-01-01")

    assert _run(dag, date(2026, 1, 2)).state == "success"
    with store.connect(settings) as client:
        second = store.live(client, settings.alias)
    assert (second.name, second.model_version, second.ds) == ("items_20260102_v2", 2, "2026-01-02")
    # day two warm-started from the model day one promoted
    assert load_meta(settings.models / "v2")["parent"] == 1
    gate = json.loads((settings.report_day("2026-01-02") / "gate.json").read_text())
    assert gate["live_version"] == 1 and gate["passed"]

    # a query made of an item's own title words finds that item through the alias
    import duckdb

    con = duckdb.connect(str(settings.warehouse), read_only=True)
    titles = con.execute("select item_id, title from mart_item_corpus where ds = '2026-01-02' "
                         "order by item_id limit 20").fetchall()
    con.close()
    client = RetrievalClient(settings)
    found = sum(item in [h["item_id"] for h in client.search(title, k=10)["results"]]
                for item, title in titles)
    assert found >= 15, f"only {found}/20 items found by their own titles"
