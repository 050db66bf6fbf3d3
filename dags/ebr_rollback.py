"""ebr_rollback: an operator moves the serving alias back, from the UI ("Trigger DAG" with params).

This file only wires; ebr.stages.rollback (indexing.promote.rollback) decides the target, checks
that it can serve and logs who asked and why, with this run's id, in the promotion log.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, Param, task

from ebr import stages
from ebr.settings import load_settings

settings = load_settings()

with DAG(
    dag_id="ebr_rollback",
    description="Move the serving alias back to the previous promoted collection (or a named one)",
    schedule=None,  # manual only
    start_date=datetime.fromisoformat(settings.start_date).replace(tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    params={
        # no default: the trigger form cannot be submitted without a reason
        "reason": Param(
            type="string",
            minLength=1,
            maxLength=1000,
            description="why serving must go back (kept in the promotion log)",
        ),
        "user": Param(
            "",
            type="string",
            maxLength=256,
            description="who asks; empty: the user who triggered the run",
        ),
        "to": Param(
            None,
            type=["null", "string"],
            maxLength=200,
            description="collection items_<yyyymmdd>_v<N> to serve; empty: the previous one",
        ),
    },
    tags=["ebr"],
) as dag:
    # The alias pool's one slot: never beside an ebr_daily task; the highest weight: next in line.
    @task(pool=settings.airflow_pool, priority_weight=1000)
    def rollback(run_id=None, params=None, dag_run=None) -> dict:
        user = params["user"] or dag_run.triggering_user_name or "airflow"
        return stages.rollback(
            settings, run_id, user=user, reason=params["reason"], to=params["to"] or None
        )

    rollback()
