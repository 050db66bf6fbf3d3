"""The real ebr_daily DAG, run with dag.test() over two small synthetic days."""

import importlib.util
import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from ebr.settings import load_settings
from ebr.synthetic import generate

pytestmark = pytest.mark.slow
DAG_FILE = Path(__file__).resolve().parent.parent / "dags" / "ebr_daily.py"
ROLLBACK_DAG_FILE = DAG_FILE.with_name("ebr_rollback.py")


def _load_dag(path: Path = DAG_FILE):
    """Imports the DAG file afresh, so it reads the settings of this test's environment."""
    spec = importlib.util.spec_from_file_location(f"{path.stem}_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def _run(dag, ds: date):
    # a daily data-interval run is dated by the end of its interval
    return dag.test(logical_date=datetime.combine(ds + timedelta(days=1), time(), tzinfo=UTC))


def test_two_days_through_the_real_dag(tmp_path, monkeypatch, airflow_db, capsys):
    monkeypatch.setenv("EBR_HOME", str(tmp_path / "ebr"))
    monkeypatch.setenv("EBR_DIM", "32")
    monkeypatch.setenv("EBR_EPOCHS", "12")  # ~1k examples a tiny day: enough steps to learn titles
    monkeypatch.setenv("EBR_BATCH_SIZE", "64")
    monkeypatch.setenv("EBR_TITLE_QUERIES", "0.5")  # the default 2 trains 2x the rows: slower
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

    # Day two trains on two processes: the train task starts the other rank (training.workers).
    monkeypatch.setenv("EBR_TRAIN_WORKERS", "2")
    assert _run(_load_dag(), date(2026, 1, 2)).state == "success"
    with store.connect(settings) as client:
        second = store.live(client, settings.alias)
    assert (second.name, second.model_version, second.ds) == ("items_20260102_v2", 2, "2026-01-02")
    # day two warm-started from the model day one promoted
    meta = load_meta(settings.models / "v2")
    assert meta["parent"] == 1 and meta["metrics"]["workers"] == 2
    assert load_meta(settings.models / "v1")["metrics"]["workers"] == 1
    gate = json.loads((settings.report_day("2026-01-02") / "gate.json").read_text())
    assert gate["live_version"] == 1 and gate["passed"]
    # each promotion passed its canary through the serving client
    for day in ("2026-01-01", "2026-01-02"):
        canary = json.loads((settings.report_day(day) / "canary.json").read_text())
        assert canary["passed"] and canary["requests"] > 0, canary

    # each run leaves a report a person reads: volumes and checks, training curve, gate curves
    report = (settings.report_day("2026-01-02") / "report.md").read_text()
    assert (
        "**Promoted** `items_20260102_v2`" in report
        and "| marts | mart_training_examples |" in report
    )
    assert f"| {gate['gate_k']} | {gate['candidate_recall'][str(gate['gate_k'])]:.4f} |" in report
    for plot in ("training.png", "recall.png"):
        assert (settings.report_day("2026-01-02") / plot).stat().st_size > 5_000

    # a query made of an item's own title words finds that item through the alias
    import duckdb

    con = duckdb.connect(str(settings.warehouse), read_only=True)
    titles = con.execute(
        "select item_id, title from mart_item_corpus where ds = '2026-01-02' "
        "order by item_id limit 20"
    ).fetchall()
    con.close()
    client = RetrievalClient(settings)
    found = sum(
        item in [h["item_id"] for h in client.search(title, k=10)["results"]]
        for item, title in titles
    )
    assert found >= 15, f"only {found}/20 items found by their own titles"

    # what an operator and a service see from the command line
    from ebr.cli import main

    capsys.readouterr()
    main(["status", "--json"])
    status = json.loads(capsys.readouterr().out)
    assert (status["collection"], status["model_version"], status["ds"]) == (
        second.name,
        2,
        "2026-01-02",
    )
    assert status["gate"]["candidate_recall"] == gate["candidate_recall"]
    item, title = titles[0]
    main(["search", title, "--user", "u1", "-k", "5", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["model_version"] == 2 and len(result["results"]) == 5
    assert {"item_id", "title", "score", "brand", "price"} <= set(result["results"][0])

    # an operator rolls back from the UI: the ebr_rollback DAG with its params
    run = _load_dag(ROLLBACK_DAG_FILE).test(
        run_conf={"reason": "e2e: back to day one", "user": "tester"}
    )
    assert run.state == "success"
    with store.connect(settings) as client:
        assert store.live(client, settings.alias).name == first.name
    capsys.readouterr()  # dag.test writes its own lines
    main(["history", "--json"])
    entries = json.loads(capsys.readouterr().out)
    assert [e["action"] for e in entries] == ["promote", "promote", "rollback"]
    assert (entries[-1]["run_id"], entries[-1]["user"], entries[-1]["replaced_collection"]) == (
        run.run_id,
        "tester",
        second.name,
    )


@pytest.mark.reliability
def test_bad_landing_data_fails_the_run_before_anything_downstream(
    tmp_path, monkeypatch, airflow_db
):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    monkeypatch.setenv("EBR_HOME", str(tmp_path / "ebr"))
    settings = load_settings()
    day = generate(settings.landing, date(2026, 1, 1), 1, "tiny", settings.seed)[0]
    events = pq.read_table(day / "events.parquet")
    bad = pc.if_else(pc.equal(events["event_type"], "click"), "klick", events["event_type"])
    pq.write_table(
        events.set_column(
            events.schema.get_field_index("event_type"), "event_type", bad.cast(pa.string())
        ),
        day / "events.parquet",
    )

    run = _run(_load_dag(), date(2026, 1, 1))
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["check_landing"] == "failed"
    assert states["train"] == "upstream_failed" and states["promote"] == "upstream_failed"
    assert all(s == "upstream_failed" for t, s in states.items() if t.startswith("transforms."))
    report = json.loads((settings.report_day("2026-01-01") / "dq_landing.json").read_text())
    assert not report["success"] and "event_type" in json.dumps(report)
    assert not settings.warehouse.exists() and not settings.models.exists()
    assert states["report"] == "success"  # the report is written for a failed day too
    report_md = (settings.report_day("2026-01-01") / "report.md").read_text()
    assert "Stopped before the gate" in report_md and "'klick'" in report_md
