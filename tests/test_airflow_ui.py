"""The Airflow UI in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`)
driven by Selenium against `airflow standalone` with the project's DAGs. It logs in through the
login form with the password Airflow generated, opens ebr_daily's graph (the dbt models as tasks of
their own in the `transforms` group), triggers a run through the REST API and, once it succeeded,
opens the run. Screenshots stay after the test: $EBR_SCREENSHOTS, else .ebr/screenshots/."""

from __future__ import annotations

import os
import shutil
import time
import urllib.parse
from datetime import date
from pathlib import Path

import pytest
from airflow_standalone import REPO, AirflowStandalone

from ebr.settings import load_settings
from ebr.synthetic import generate

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed: pip install -e '.[test]'"
)
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

# Debian's packages only: Selenium Manager, given both paths, downloads nothing.
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
WIDTH, HEIGHT = 1600, 1000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.scheduler,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="no headless browser: `apt-get install chromium chromium-driver` (.ci/run does, as root)",
    ),
]


def _screenshots() -> Path:
    folder = Path(os.environ.get("EBR_SCREENSHOTS") or REPO / ".ebr" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: Chromium's sandbox refuses to start as root (CI containers);
    # --disable-dev-shm-usage: containers' /dev/shm is often too small for it.
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={WIDTH},{HEIGHT}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    # --window-size counts the (invisible) window frame: fix the page's own size for the screenshots.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
    )
    return driver


def _shoot(driver, name: str) -> Path:
    time.sleep(1.5)  # the graph eases into its fitted view and nodes fade in: let it settle
    path = _screenshots() / name
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def _lines(driver) -> set[str]:
    return set(driver.find_element(By.TAG_NAME, "body").text.splitlines())


def _graph(driver, wait: WebDriverWait, expected: set[str]) -> dict[str, str]:
    """Task id -> text of each node the graph draws, once it has drawn every expected one."""

    def nodes(d) -> dict[str, str] | None:
        if any(e.is_displayed() for e in d.find_elements(By.CSS_SELECTOR, ".chakra-spinner")):
            return None  # still loading the structure or the task states
        drawn = {
            e.get_attribute("data-id"): e.text
            for e in d.find_elements(By.CSS_SELECTOR, ".react-flow__node")
        }
        return drawn if expected <= drawn.keys() else None

    return wait.until(nodes)


def test_ui_shows_the_graph_and_a_triggered_run(tmp_path):
    env = {
        "EBR_HOME": str(tmp_path / "ebr"),
        "EBR_DIM": "32",
        "EBR_EPOCHS": "2",
        "EBR_BATCH_SIZE": "64",
        "EBR_TITLE_QUERIES": "0.5",  # the default 2 trains 2x the rows: slower
        "EBR_RECALL_FLOOR": "0.01",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        settings = load_settings()
    generate(settings.landing, date(2026, 1, 1), 1, "tiny", settings.seed)

    with AirflowStandalone(tmp_path / "airflow", env) as airflow:
        airflow.airflow(
            "pools",
            "set",
            settings.airflow_pool,
            "1",
            "one writer at a time: DuckDB, Milvus Lite, the alias",
        )
        task_ids = {
            t["task_id"] for t in airflow.api("GET", "/api/v2/dags/ebr_daily/tasks")["tasks"]
        }
        dbt_tasks = {
            t for t in task_ids if t.startswith("transforms.")
        }  # one per model, and the tests
        top = (task_ids - dbt_tasks) | {"transforms"}
        assert {"transforms.stg_events_run", "transforms.mart_training_examples_run"} <= dbt_tasks

        driver = _browser()
        try:
            # The api-server answers slowly on 2 busy cores; nodes re-render while the graph loads.
            wait = WebDriverWait(driver, 120, ignored_exceptions=(StaleElementReferenceException,))
            # Log in through the form the UI redirects to, with the generated password.
            driver.get(f"{airflow.url}/dags/ebr_daily")
            wait.until(EC.presence_of_element_located((By.NAME, "username"))).send_keys("admin")
            driver.find_element(By.NAME, "password").send_keys(airflow.password)
            driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            wait.until(lambda d: "/auth/login" not in d.current_url)
            assert driver.current_url.endswith("/dags/ebr_daily")
            wait.until(
                EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "ebr_daily")
            )  # the app drew

            # The graph, full width. The group starts collapsed: one node for all the dbt tasks.
            wait.until(
                EC.element_to_be_clickable((By.CSS_SELECTOR, "button[aria-label^='Show Graph']"))
            ).click()
            driver.find_element(
                By.CSS_SELECTOR, "button[aria-label='Collapse Details Panel']"
            ).click()
            nodes = _graph(driver, wait, top)
            assert not nodes.keys() & dbt_tasks, nodes
            assert (
                "Task Group" in nodes["transforms"]
                and f"{len(dbt_tasks)} Tasks" in nodes["transforms"]
            )
            shots = [_shoot(driver, "ebr_daily-graph.png")]
            # Expanded: every dbt model is a task of its own inside the group.
            driver.find_element(By.CSS_SELECTOR, "[data-testid=expand-all-button]").click()
            nodes = _graph(driver, wait, task_ids | {"transforms"})
            assert all("Dbt" in nodes[t] for t in dbt_tasks), (
                nodes
            )  # Cosmos operators: DbtRun..., DbtTest...
            shots.append(_shoot(driver, "ebr_daily-graph-expanded.png"))

            # A run for 2026-01-01: a daily run's data interval is the day before its logical date.
            run = airflow.trigger("ebr_daily", "2026-01-02T00:00:00Z")
            assert run["data_interval_start"].startswith("2026-01-01"), run
            run = airflow.wait_for_run("ebr_daily", run["dag_run_id"])
            assert run["state"] == "success", f"{run}\n{airflow.log.read_text()[-3000:]}"

            # The run's page (the graph stays the chosen view, the group expanded): every task
            # drawn with its state, and the run's state beside it.
            driver.get(
                f"{airflow.url}/dags/ebr_daily/runs/{urllib.parse.quote(run['dag_run_id'], safe='')}"
            )
            nodes = _graph(driver, wait, task_ids)
            assert all("success" in nodes[t].splitlines() for t in task_ids), nodes
            wait.until(
                lambda d: {run["dag_run_id"], "Success"} <= _lines(d)
            )  # the run's id and state badge
            assert "Failed" not in driver.find_element(By.TAG_NAME, "body").text
            shots.append(_shoot(driver, "ebr_daily-run-graph.png"))
            # The grid: one column for the run, a row per task, and the task instances' table.
            driver.find_element(By.CSS_SELECTOR, "button[aria-label^='Show Grid']").click()
            wait.until(
                EC.text_to_be_present_in_element(
                    (By.TAG_NAME, "body"), f"{len(task_ids)} Task Instances"
                )
            )
            shots.append(_shoot(driver, "ebr_daily-run-grid.png"))
            assert all(path.stat().st_size > 10_000 for path in shots)
        finally:
            driver.quit()
