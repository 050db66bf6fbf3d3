"""A real `airflow standalone` (scheduler, dag-processor, api-server, triggerer; LocalExecutor on
SQLite) for tests that need what dag.test() skips: backfills, pools, the REST API, the UI.

It runs the project's DAGs from a throwaway AIRFLOW_HOME on a free port, logs in with the password
Airflow generated (read from its file: no password is set anywhere in this project), and stops the
whole process group on exit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AirflowStandalone:
    def __init__(self, home: Path, env: dict[str, str], timeout_s: float = 240):
        self.home, self.timeout_s = home, timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # standalone runs `airflow ...`
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            # Only runs the test asks for (backfills, triggers): no run for "yesterday" appears
            # on its own when the DAG is unpaused.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            # Cosmos renders the dbt project with `dbt ls` while parsing: ~20-40 s on 2 busy cores.
            "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "300",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "240",
            "AIRFLOW__CORE__PARALLELISM": "2",  # the pool runs one task at a time anyway
            # A task's worker calls the api-server (execution API) with a 5 s timeout by default; on 2
            # busy cores, with a browser on the UI, that times out and the task dies before it starts.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            # The worker's and triggerer's log servers on free ports too: two instances at once (two
            # tests, or a developer's) would both want 8793 and 8794.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            **env,
        }
        self.log = home / "standalone.log"
        self.process: subprocess.Popen | None = None
        self._token: str | None = None

    def airflow(self, *args: str) -> str:
        """An `airflow` CLI command against this instance's metadata database."""
        done = subprocess.run(
            [str(BIN / "airflow"), *args], env=self.env, capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def __enter__(self) -> AirflowStandalone:
        self.home.mkdir(parents=True, exist_ok=True)
        self.airflow("db", "migrate")
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(BIN / "airflow"), "standalone"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # standalone stops its components on ^C
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    @property
    def password(self) -> str:
        """The admin password Airflow generated into its own file."""
        generated = json.loads(
            (self.home / "simple_auth_manager_passwords.json.generated").read_text()
        )
        return generated["admin"]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"airflow standalone exited:\n{self.log.read_text()[-4000:]}")
            try:
                health = self.api("GET", "/api/v2/monitor/health", auth=False)
                if all(
                    health.get(part, {}).get("status") == "healthy"
                    for part in ("metadatabase", "scheduler", "dag_processor")
                ):
                    self.api("GET", "/api/v2/dags/ebr_daily")  # parsed and serialised
                    return
            except (OSError, urllib.error.URLError, FileNotFoundError, KeyError):
                pass
            time.sleep(2)
        raise TimeoutError(
            f"airflow standalone not ready in {self.timeout_s} s:\n{self.log.read_text()[-4000:]}"
        )

    def _login(self) -> str:
        if self._token is None:
            body = self._request(
                "POST", "/auth/token", {"username": "admin", "password": self.password}, None
            )
            self._token = body["access_token"]
        return self._token

    def trigger(self, dag_id: str, logical_date: str) -> dict:
        """A manual run, created through the REST API as the UI's Trigger button does."""
        return self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": logical_date})

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float = 1200) -> dict:
        """The run once it has finished (success or failed), polled through the REST API."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
        deadline = time.monotonic() + timeout_s
        state = "unknown"
        while time.monotonic() < deadline:
            try:
                run = self.api("GET", path)
            except OSError:  # URLError, timeouts: a starved api-server is no verdict; ask again
                time.sleep(5)
                continue
            state = run["state"]
            if state in ("success", "failed"):
                return run
            time.sleep(5)
        raise TimeoutError(
            f"{run_id} still {state} after {timeout_s} s:\n{self.log.read_text()[-3000:]}"
        )

    def api(self, method: str, path: str, body: dict | None = None, auth: bool = True) -> dict:
        return self._request(method, path, body, self._login() if auth else None)

    def _request(self, method: str, path: str, body: dict | None, token: str | None) -> dict:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:  # say what the API answered, not just its code
            error.msg = f"{error.msg}: {error.read().decode(errors='replace')[:2000]}"
            raise
