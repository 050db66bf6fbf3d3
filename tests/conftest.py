import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Airflow reads AIRFLOW_HOME when first imported: point it at a throwaway home before any test
# imports it, so tests never touch a developer's ./.airflow.
REPO = Path(__file__).resolve().parent.parent
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="ebr-test-airflow-")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__COSMOS__ENABLE_TELEMETRY"] = "False"  # no network here, nor in CI

from ebr.settings import Settings, load_settings  # noqa: E402


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    """Settings whose whole state (landing, warehouse, models, Milvus Lite, reports) is in tmp_path."""
    monkeypatch.setenv("EBR_HOME", str(tmp_path / "ebr"))
    monkeypatch.delenv("EBR_MILVUS_URI", raising=False)
    s = load_settings()
    s.home.mkdir(parents=True)
    return s


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata database (SQLite) for dag.test()."""
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)
    return Path(os.environ["AIRFLOW_HOME"])
