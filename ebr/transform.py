"""Run the dbt project in transforms/ for one day.

The only inputs of the dbt project are its vars (``ds``, ``landing_root``, ``eval_start_hour``)
and the ``EBR_WAREHOUSE`` env var read by ``transforms/profiles.yml``; the Airflow DAG runs the
same project through astronomer-cosmos with the same ones (see :func:`dbt_vars`, :func:`dbt_env`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

from ebr.settings import Settings

DBT_PROJECT_DIR: Path = Path(__file__).resolve().parent.parent / "transforms"

_OUTPUT_TAIL_CHARS = 6000


def dbt_vars(ds: str, settings: Settings) -> dict[str, str | int]:
    """The dbt vars of a run for day ``ds`` (may be an Airflow template such as
    ``"{{ data_interval_start | ds }}"``; the dbt macro ``ds_date`` validates the rendered day)."""
    return {
        "ds": ds,
        "landing_root": str(settings.landing.resolve()),
        "eval_start_hour": settings.eval_start_hour,
    }


def dbt_env(settings: Settings) -> dict[str, str]:
    """The environment variables the dbt project reads (on top of the inherited ones)."""
    return {
        "EBR_WAREHOUSE": str(settings.warehouse.resolve()),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
    }


def dbt_executable() -> str:
    """The ``dbt`` installed next to the running interpreter (falls back to PATH)."""
    candidate = Path(sys.executable).parent / "dbt"
    return str(candidate) if candidate.exists() else "dbt"


def dbt_build(ds: str, settings: Settings, select: str | None = None) -> None:
    """``dbt build`` (models + data tests) of day ``ds`` into ``settings.warehouse``.

    dbt's target and log folders go under ``settings.home / "dbt"`` so the source tree stays
    clean. Raises ``RuntimeError`` with the tail of dbt's output when dbt fails.
    """
    date.fromisoformat(ds)  # fail here, not deep inside dbt, on a malformed day
    dbt_home = settings.home / "dbt"
    settings.warehouse.parent.mkdir(parents=True, exist_ok=True)
    command = [
        dbt_executable(),
        "build",
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(dbt_home / "target"),
        "--log-path",
        str(dbt_home / "logs"),
        "--vars",
        json.dumps(dbt_vars(ds, settings)),
    ]
    if select:
        command += ["--select", select]
    # The child inherits the environment (PATH, HOME, ...) plus the project's own variables.
    env = {**os.environ, **dbt_env(settings)}
    result = subprocess.run(
        command,
        cwd=DBT_PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = result.stdout[-_OUTPUT_TAIL_CHARS:]
        raise RuntimeError(
            f"dbt build failed for ds={ds} (exit code {result.returncode}, "
            f"warehouse {settings.warehouse}):\n{tail}"
        )
