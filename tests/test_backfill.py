"""Backfills through a real scheduler (`airflow standalone`): `airflow backfill create` over two
days with the backfill allowed both runs at once still runs one task at a time (the ebr_serial
pool) and the training chain day after day; a later backfill of an old day, created through the
REST API as the UI does, trains, gates and keeps that day without moving serving back in time."""

from __future__ import annotations

import json
import time
from datetime import date, datetime
from urllib.parse import quote

import pytest
from airflow_standalone import AirflowStandalone

from ebr.settings import load_settings
from ebr.synthetic import generate
from indexing import store
from indexing.promote import history
from training.artifact import load_meta

pytestmark = [pytest.mark.slow, pytest.mark.scheduler, pytest.mark.long, pytest.mark.reliability]
DAYS = ["2026-01-01", "2026-01-02"]


def _wait_for_runs(airflow: AirflowStandalone, count: int, timeout_s: float = 2400) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = airflow.api("GET", "/api/v2/dags/ebr_daily/dagRuns?limit=100")["dag_runs"]
        if len(runs) >= count and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        time.sleep(5)
    raise TimeoutError(
        f"runs not finished in {timeout_s} s: {[(r['dag_run_id'], r['state']) for r in runs]}\n"
        f"{airflow.log.read_text()[-3000:]}"
    )


def _retry_while_locked(command, attempts: int = 5) -> None:
    for attempt in range(attempts):
        try:
            command()
            return
        except RuntimeError as error:
            if "database is locked" not in str(error) or attempt == attempts - 1:
                raise
            time.sleep(3)


def _wait_for_backfills_to_close(airflow: AirflowStandalone, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        backfills = airflow.api("GET", "/api/v2/backfills?dag_id=ebr_daily")["backfills"]
        if all(b["completed_at"] for b in backfills):
            return
        time.sleep(5)
    raise TimeoutError(f"backfills still open after {timeout_s} s: {backfills}")


def _wait_for_rerun(airflow: AirflowStandalone, run: dict, timeout_s: float = 2400) -> dict:
    path = f"/api/v2/dags/ebr_daily/dagRuns/{quote(run['dag_run_id'], safe='')}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = airflow.api("GET", path)
        if (
            now["end_date"]
            and now["end_date"] != run["end_date"]
            and now["state"] in ("success", "failed")
        ):
            return now
        time.sleep(5)
    raise TimeoutError(f"{run['dag_run_id']} not rerun in {timeout_s} s: {now}")


def _task_instances(airflow: AirflowStandalone) -> list[dict]:
    tis = airflow.api("GET", "/api/v2/dags/ebr_daily/dagRuns/~/taskInstances?limit=1000")[
        "task_instances"
    ]
    return [ti for ti in tis if ti["start_date"]]


def _ds(ti: dict, runs: dict[str, dict]) -> str:
    return runs[ti["dag_run_id"]]["data_interval_start"][:10]


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_backfills_run_in_order_and_never_move_serving_back(tmp_path):
    ebr_home = tmp_path / "ebr"
    env = {
        "EBR_HOME": str(ebr_home),
        "EBR_DIM": "32",
        "EBR_EPOCHS": "1",
        "EBR_BATCH_SIZE": "64",
        "EBR_TITLE_QUERIES": "0.5",  # the default 2 trains 2x the rows: slower
        "EBR_RECALL_FLOOR": "0.01",
        "EBR_REGRESSION_MARGIN": "0.5",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        settings = load_settings()
    generate(settings.landing, date(2026, 1, 1), len(DAYS), "tiny", settings.seed)

    with AirflowStandalone(tmp_path / "airflow", env) as airflow:
        airflow.airflow(
            "pools",
            "set",
            settings.airflow_pool,
            "1",
            "one writer at a time: DuckDB, Milvus Lite, the alias",
        )
        # SQLite takes one writer: the CLI may meet the scheduler's transaction ("database is
        # locked", nothing created); Postgres deployments do not see this.
        _retry_while_locked(
            lambda: airflow.airflow(
                "backfill",
                "create",
                "--dag-id",
                "ebr_daily",
                "--from-date",
                DAYS[0],
                "--to-date",
                DAYS[-1],
                "--max-active-runs",
                str(len(DAYS)),
                "--reprocess-behavior",
                "failed",
            )
        )
        runs = {r["dag_run_id"]: r for r in _wait_for_runs(airflow, len(DAYS))}
        assert sorted(r["data_interval_start"][:10] for r in runs.values()) == DAYS
        assert all(r["state"] == "success" for r in runs.values()), runs
        tis = _task_instances(airflow)

        # one task at a time across the runs, whatever the backfill allowed
        spans = sorted((_at(ti["start_date"]), _at(ti["end_date"])) for ti in tis)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans
        # each day trains after the day before has finished promoting: the chain v1 -> v2
        trains = sorted(
            (_ds(ti, runs), _at(ti["start_date"])) for ti in tis if ti["task_id"] == "train"
        )
        promotes = {_ds(ti, runs): _at(ti["end_date"]) for ti in tis if ti["task_id"] == "promote"}
        assert [t for _, t in trains] == sorted(t for _, t in trains)
        for (day, started), previous in zip(trains[1:], DAYS):
            assert started >= promotes[previous], (day, started, promotes[previous])
        assert [load_meta(settings.models / f"v{v}")["parent"] for v in (1, 2)] == [None, 1]
        assert [(e["action"], e["ds"]) for e in history(settings)] == [("promote", d) for d in DAYS]

        # the UI's backfill form posts this: day one again, its completed run reprocessed (Airflow
        # allows one unfinished backfill per DAG: the scheduler closes the first one shortly after)
        _wait_for_backfills_to_close(airflow)
        day_one = next(r for r in runs.values() if r["data_interval_start"].startswith(DAYS[0]))
        airflow.api(
            "POST",
            "/api/v2/backfills",
            {
                "dag_id": "ebr_daily",
                "from_date": f"{DAYS[0]}T00:00:00Z",
                "to_date": f"{DAYS[0]}T00:00:00Z",
                "max_active_runs": 1,
                "reprocess_behavior": "completed",
            },
        )
        assert (
            _wait_for_rerun(airflow, day_one)["state"] == "success"
        )  # the same run, cleared and run again

    with store.connect(settings) as client:
        live = store.live(client, settings.alias)
        kept = store.info(client, store.collection_name(DAYS[0], 3))
    assert (live.name, live.model_version) == (store.collection_name(DAYS[-1], 2), 2)
    assert kept.complete and kept.ds == DAYS[0]  # trained, gated and kept, not served
    assert (
        load_meta(settings.models / "v1")["parent"] is None
    )  # what served on day one is untouched
    assert "**not promoted**" in (settings.report_day(DAYS[0]) / "report.md").read_text()
    gate = json.loads((settings.report_day(DAYS[0]) / "gate.json").read_text())
    assert gate["candidate_version"] == 3 and gate["live_version"] == 2
    assert len(history(settings)) == len(DAYS)  # no promotion back in time
