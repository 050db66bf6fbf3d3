"""docker/: the production-shaped deployment (Airflow on PostgreSQL with Celery workers, a Milvus
standalone server), checked as files, since the tests must not need docker. `docker compose` is
usually not available where the tests run (no compose plugin, no daemon); when it is,
test_compose_renders also has it render the file.

What only a running stack shows (images pulled, containers talking) is out of reach here; the
switch itself, Airflow's metadata on PostgreSQL, runs for real in test_postgres_metadata.py.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker" / "compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
REFERENCE = re.compile(r"\$\{[^}]*\}")  # ${VAR}, ${VAR:-default}, ${VAR:?message}
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET")


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # PyYAML applies the `<<: *airflow` merges


def _command(service: dict) -> str:
    command = service.get("command", "")
    return command if isinstance(command, str) else " ".join(command)


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the other form compose accepts: ["KEY=value", ...]
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _host(url: str) -> str | None:
    return urlsplit(REFERENCE.sub("x", url)).hostname  # a reference may hold ':' or spaces


def _airflow_services(compose: dict) -> dict[str, dict]:
    return {
        name: s for name, s in compose["services"].items() if re.search(r"\bairflow ", _command(s))
    }


def test_the_services_the_deployment_needs():
    compose = _compose()
    services = compose["services"]
    airflow = _airflow_services(compose)
    commands = " | ".join(_command(s) for s in airflow.values())
    for part in (
        "airflow api-server",
        "airflow scheduler",
        "airflow dag-processor",
        "airflow db migrate",
    ):
        assert part in commands, f"no service runs `{part}`"
    # the one-slot pool every ebr task takes exists before the first run
    assert re.search(r"airflow pools set ebr_serial 1\b", commands), (
        "no service creates the ebr_serial pool"
    )
    assert services["postgres"]["image"].startswith("postgres:")

    # A distributed executor: Celery, with workers and a broker that is a service of this file.
    executors = {_env(s)["AIRFLOW__CORE__EXECUTOR"] for s in airflow.values()}
    assert executors == {"CeleryExecutor"}, executors
    assert "airflow celery worker" in commands
    brokers = {_host(_env(s)["AIRFLOW__CELERY__BROKER_URL"]) for s in airflow.values()}
    assert len(brokers) == 1 and brokers <= set(services), brokers

    # Milvus standalone on its etcd and MinIO.
    milvus = services["milvus"]
    assert milvus["image"].startswith("milvusdb/milvus:") and "standalone" in _command(milvus)
    etcd, minio = (
        _env(milvus)["ETCD_ENDPOINTS"].split(":")[0],
        _env(milvus)["MINIO_ADDRESS"].split(":")[0],
    )
    assert "etcd" in services[etcd]["image"] and "minio" in services[minio]["image"]
    assert {etcd, minio} <= set(milvus["depends_on"])


def test_every_airflow_service_uses_postgres_and_milvus():
    compose = _compose()
    services = compose["services"]
    airflow = _airflow_services(compose)
    assert len(airflow) >= 5, sorted(airflow)
    for name, service in airflow.items():
        env = _env(service)
        db = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
        assert db.startswith("postgresql+psycopg2://") and _host(db) == "postgres", (name, db)
        milvus = urlsplit(env.get("EBR_MILVUS_URI", ""))
        assert (milvus.hostname, milvus.port) == ("milvus", 19530), (
            name,
            env.get("EBR_MILVUS_URI"),
        )
        assert {"postgres", "milvus"} <= set(service.get("depends_on", [])), name
        # Keys that must be the same in every container: Airflow generates a random one per
        # container when unset, and then the api-server rejects the tokens the scheduler signs.
        for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY"):
            assert REFERENCE.fullmatch(env.get(key, "")), (name, key)
        # every host an Airflow service talks to is a service here (catches a renamed service)
        for key, value in env.items():
            if "://" in value:
                assert _host(value) in services, (name, key, value)
        # landing files, warehouse, models and reports: one volume every task and worker shares
        assert any(str(v).endswith(":/data/ebr") for v in service.get("volumes", [])), name
        assert env["EBR_HOME"] == "/data/ebr"


def test_no_literal_secrets():
    """Passwords, keys and tokens are ${VAR} references to the environment, never values."""
    for name, service in _compose()["services"].items():
        for key, value in _env(service).items():
            if SECRET_KEY.search(key):
                assert not REFERENCE.sub("", value), f"{name}: {key} holds a literal value"
            # the password part of a connection URL, e.g. postgresql://user:PASSWORD@host/db
            if match := re.match(r"[\w+.-]+://[^/@:]*:(.*)@", value):
                assert not REFERENCE.sub("", match.group(1)), (
                    f"{name}: {key} holds a literal password"
                )


def test_dockerfile_installs_the_project_and_the_drivers_the_compose_file_needs():
    text = DOCKERFILE.read_text().replace("\\\n", " ")  # one line per instruction
    installs = [
        line for line in text.splitlines() if line.startswith("RUN ") and "pip install" in line
    ]
    assert len(installs) == 1, installs
    args = shlex.split(installs[0].split("pip install", 1)[1])
    assert "." in args, "the image must install the project (pip install -e . or pip install .)"
    # PostgreSQL drivers (psycopg2, and asyncpg which Airflow 3 also needs) and the Celery executor
    assert {"apache-airflow-providers-postgres", "apache-airflow-providers-celery"} <= {
        re.split(r"[<>=\[]", a)[0] for a in args
    }
    # every package pyproject installs, the DAGs and the dbt project are in the image
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]
    copied = {
        src for line in text.splitlines() if line.startswith("COPY ") for src in line.split()[1:-1]
    }
    needed = {p.rstrip("*") for p in packages["include"]} | {"dags", "transforms", "pyproject.toml"}
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"


def test_compose_renders():
    """`docker compose config` resolves the file (merges, references) without a daemon."""
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode:
        pytest.skip(
            "`docker compose` is not installed here (expected: the checks above read the file)"
        )
    env = {
        var: "x"
        for var in (
            "POSTGRES_PASSWORD",
            "MINIO_ROOT_USER",
            "MINIO_ROOT_PASSWORD",
            "AIRFLOW_JWT_SECRET",
            "AIRFLOW_FERNET_KEY",
        )
    }
    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr
