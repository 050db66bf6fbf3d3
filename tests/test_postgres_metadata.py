"""Airflow's metadata database switched to a real PostgreSQL server by settings alone
(AIRFLOW__DATABASE__SQL_ALCHEMY_CONN), as docker/compose.yaml does: `airflow db migrate`, the
ebr_serial pool, then one tiny synthetic day through the real ebr_daily DAG with
`airflow dags test`, as `ebr demo` runs it.

The server is Debian's PostgreSQL package (or any `pg_ctl` on PATH), started by the test in a
throwaway directory on a free 127.0.0.1 port with a generated password, and stopped afterwards
even when the test fails.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg2  # the test extra: the driver Airflow's metadata URL below names
import pytest
from airflow_standalone import free_port

from ebr.cli import airflow_env, logical_date_for
from ebr.settings import load_settings
from ebr.synthetic import generate

pytestmark = pytest.mark.slow
DAY = "2026-01-01"


def _pg_bin() -> Path | None:
    """The folder of pg_ctl: PATH first, else the newest of Debian's /usr/lib/postgresql/<major>/bin."""
    if found := shutil.which("pg_ctl"):
        return Path(found).resolve().parent  # beside initdb, whatever links put pg_ctl on PATH
    debian = [
        p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl") if p.parts[-3].isdigit()
    ]
    return max(debian, key=lambda p: int(p.parts[-3]), default=None)


def _as_postgres_user() -> list[str]:
    """The prefix that runs a server command as a user PostgreSQL accepts: it refuses to run as root."""
    if os.geteuid() != 0:
        return []  # any other user may own a cluster
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip(
            "running as root and there is no `postgres` OS user to run the server as "
            "(PostgreSQL refuses to run as root)"
        )
    if not shutil.which("runuser"):
        pytest.skip("running as root without `runuser` to start PostgreSQL as the `postgres` user")
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class Postgres:
    port: int
    database: str
    user: str
    password: str

    @property
    def url(self) -> str:
        return (
            f"postgresql+psycopg2://{self.user}:{self.password}@127.0.0.1:{self.port}/"
            f"{self.database}"
        )

    def connect(self):
        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            dbname=self.database,
            user=self.user,
            password=self.password,
        )


@pytest.fixture
def postgres():
    pg_bin = _pg_bin()
    if pg_bin is None:
        pytest.skip(
            "no PostgreSQL server binaries (pg_ctl): `apt-get install postgresql` provides them"
        )
    as_pg = _as_postgres_user()
    # Not pytest's tmp_path: its parents are private to root, and the server user must reach this
    # folder (cluster, log and unix socket all live in it).
    root = Path(tempfile.mkdtemp(prefix="ebr-pg-"))
    if as_pg:
        shutil.chown(root, "postgres", "postgres")
    data, log, port = root / "data", root / "server.log", free_port()

    def server(*cmd: str) -> None:
        done = subprocess.run([*as_pg, *cmd], cwd=root, capture_output=True, text=True)
        if done.returncode:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}\n{tail}")

    pg = Postgres(
        port, "airflow", "airflow", secrets.token_hex(16)
    )  # a fresh password, kept nowhere
    try:
        # Trust only on the unix socket, in a folder (0700) only the server user and root can enter:
        # the superuser sets things up there. Passwords on TCP, where Airflow logs in as a real
        # deployment would. fsync off: the server is thrown away.
        server(
            str(pg_bin / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        )
        server(
            str(pg_bin / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "start",
            "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off",
        )
        admin = psycopg2.connect(host=str(root), port=port, dbname="postgres", user="postgres")
        admin.autocommit = True  # CREATE DATABASE runs outside a transaction
        with admin.cursor() as cur:
            cur.execute(f"CREATE ROLE {pg.user} LOGIN PASSWORD %s", (pg.password,))
            cur.execute(f"CREATE DATABASE {pg.database} OWNER {pg.user}")
        admin.close()
        yield pg
    finally:
        subprocess.run(
            [*as_pg, str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            cwd=root,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def _airflow(env: dict, *args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        ["airflow", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (
        f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


def test_a_day_through_the_dag_on_postgresql(tmp_path, monkeypatch, postgres):
    monkeypatch.setenv("EBR_HOME", str(tmp_path / "ebr"))
    monkeypatch.delenv("EBR_MILVUS_URI", raising=False)  # Milvus Lite under EBR_HOME
    monkeypatch.setenv("EBR_DIM", "32")
    monkeypatch.setenv("EBR_EPOCHS", "1")  # this test is about the metadata database, not quality
    monkeypatch.setenv("EBR_BATCH_SIZE", "64")
    monkeypatch.setenv("EBR_TITLE_QUERIES", "0.5")  # the default 2 trains 2x the rows: slower
    monkeypatch.setenv("EBR_RECALL_FLOOR", "0.01")
    settings = load_settings()
    generate(settings.landing, date.fromisoformat(DAY), 1, "tiny", settings.seed)

    env = airflow_env(settings)  # what `ebr demo` runs Airflow with, but:
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow")  # a fresh home, no SQLite file from before
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = postgres.url

    _airflow(env, "db", "migrate")
    # dag.test() ignores pools, but a deployment creates it once: it must live in PostgreSQL too.
    _airflow(env, "pools", "set", settings.airflow_pool, "1", "one writer at a time")
    log = tmp_path / "dags_test.log"
    with log.open("w") as out:
        run = subprocess.run(
            ["airflow", "dags", "test", "ebr_daily", logical_date_for(DAY)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=900,
        )
    assert run.returncode == 0, log.read_text()[-5000:]

    with postgres.connect() as con, con.cursor() as cur:
        cur.execute(
            "select run_id, state, data_interval_start::date from dag_run where dag_id = 'ebr_daily'"
        )
        runs = cur.fetchall()
        cur.execute("select task_id, state from task_instance where dag_id = 'ebr_daily'")
        states = dict(cur.fetchall())
        cur.execute("select slots from slot_pool where pool = %s", (settings.airflow_pool,))
        pool = cur.fetchall()
    con.close()  # psycopg2's `with` ends the transaction only
    assert [(state, str(start)) for _, state, start in runs] == [("success", DAY)], runs
    assert {
        "check_landing",
        "check_marts",
        "train",
        "build_index",
        "gate",
        "promote",
        "clean",
    } <= set(states)
    assert any(t.startswith("transforms.") for t in states), states
    assert states["promote"] == "success" and set(states.values()) <= {"success", "skipped"}, states
    assert pool == [(1,)]
    assert not (tmp_path / "airflow" / "airflow.db").exists()  # nothing fell back to SQLite

    from indexing import store

    with store.connect(settings) as client:
        live = store.live(client, settings.alias)
    assert (live.name, live.model_version, live.ds) == ("items_20260101_v1", 1, DAY)
