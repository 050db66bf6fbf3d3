"""ebr_daily: one day of search logs -> checked marts -> retrained model -> new index -> gate -> alias
-> canary (a failed canary moves the alias back and fails the promote task).

This file only wires tasks; every step lives in ebr.stages. The data interval decides the
partition (ds) of every task, so reruns and backfills of a day touch that day alone. Rollbacks by
hand: the ebr_rollback DAG. Every task takes a slot of the pool EBR_AIRFLOW_POOL (one slot; create
it once with `airflow pools set`, see the README).
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, Param, task
from airflow.timetables.interval import CronDataIntervalTimetable
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import InvocationMode, LoadMode, TestBehavior

from ebr import stages
from ebr.settings import Settings, load_settings
from ebr.transform import DBT_PROJECT_DIR, dbt_env, dbt_executable, dbt_vars

settings = load_settings()


def _settings(params: dict) -> Settings:
    return settings.with_model(epochs=int(params["epochs"]))


def _ds(data_interval_start: datetime) -> str:
    return data_interval_start.strftime("%Y-%m-%d")


with DAG(
    dag_id="ebr_daily",
    description="Daily EBR refresh: dbt marts, data checks, MGDSPR retraining, Milvus re-index, recall gate, "
    "alias swap, canary",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime.fromisoformat(settings.start_date).replace(tzinfo=UTC),
    catchup=False,
    max_active_runs=1,  # days run one after another: each warm-starts from the last promotion
    max_active_tasks=1,  # DuckDB and Milvus Lite each allow one writing process...
    # ...but a backfill runs up to its own max_active_runs at once, and Airflow 3 counts
    # max_active_tasks per run: the one-slot pool keeps them to one writer across runs and DAGs,
    # and "upstream" weights let a day finish (promote) before the next one trains.
    default_args={"pool": settings.airflow_pool, "weight_rule": "upstream"},
    params={
        "epochs": Param(settings.model.epochs, type="integer", minimum=1, maximum=50),
        "allow_older_promotion": Param(
            False, type="boolean", description="promote even if the live model's data day is newer"
        ),
    },
    tags=["ebr"],
) as dag:
    # The data chain runs day after day (depends_on_past): a day's point-in-time features read
    # the earlier days' rows, and its model warm-starts from the day before. The index, gate and
    # promotion do not wait on the day before: a refused day must not stall the next ones.
    @task(depends_on_past=True)
    def check_landing(data_interval_start=None) -> dict:
        return stages.check_landing(_ds(data_interval_start), settings)

    transforms = DbtTaskGroup(
        group_id="transforms",
        project_config=ProjectConfig(DBT_PROJECT_DIR, install_dbt_deps=False),
        profile_config=ProfileConfig(
            profile_name="ebr",
            target_name="dev",
            profiles_yml_filepath=DBT_PROJECT_DIR / "profiles.yml",
        ),
        execution_config=ExecutionConfig(
            invocation_mode=InvocationMode.SUBPROCESS, dbt_executable_path=dbt_executable()
        ),
        # One test task after all models: every model keeps its own task, and a day costs 11 task
        # start-ups instead of 20 (each ~5-10 s of Airflow and dbt start-up here).
        render_config=RenderConfig(
            load_method=LoadMode.DBT_LS,
            invocation_mode=InvocationMode.SUBPROCESS,
            dbt_executable_path=dbt_executable(),
            env_vars=dbt_env(settings),
            test_behavior=TestBehavior.AFTER_ALL,
        ),
        operator_args={
            "vars": dbt_vars("{{ data_interval_start | ds }}", settings),
            "env": dbt_env(settings),
            "append_env": True,
            "install_deps": False,
            "depends_on_past": True,
        },
    )

    @task(depends_on_past=True)
    def check_marts(data_interval_start=None) -> dict:
        return stages.check_marts(_ds(data_interval_start), settings)

    @task(depends_on_past=True)
    def train(data_interval_start=None, params=None) -> int:
        return stages.train(_ds(data_interval_start), _settings(params))

    @task
    def build_index(version: int, data_interval_start=None) -> str:
        return stages.build_index(_ds(data_interval_start), version, settings)

    @task
    def gate(version: int, data_interval_start=None) -> dict:
        return stages.gate(_ds(data_interval_start), version, settings)

    @task
    def promote(data_interval_start=None, run_id=None, params=None) -> dict | None:
        return stages.promote(
            _ds(data_interval_start),
            settings,
            run_id,
            allow_older=bool(params["allow_older_promotion"]),
        )

    @task
    def clean() -> list[str]:
        return stages.clean(settings)

    # Whatever happened before (a refused or failed day is when it is read most); its return value,
    # the report's path, shows in the task's XCom tab and the path in its log.
    @task(trigger_rule="all_done")
    def report(data_interval_start=None, run_id=None) -> str:
        return stages.report(_ds(data_interval_start), settings, run_id)

    version = train()
    indexed = build_index(version)
    gated = gate(version)
    check_landing() >> transforms >> check_marts() >> version
    promoted = promote()
    indexed >> gated >> promoted >> clean()
    promoted >> report()
