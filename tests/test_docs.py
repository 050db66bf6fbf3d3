"""`ebr docs dbt` and `ebr docs expectations`: real sites from real days, clear failures.

Two days go through the stages the docs are built from (landing check, dbt, mart check); then
both commands run through ``ebr.cli.main`` against that EBR_HOME.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from test_expectations import DS, PREVIOUS_DS, good_events, good_items, make_settings, write_landing

from ebr.cli import main
from ebr.settings import Settings
from ebr.transform import dbt_build
from expectations.runner import GE_RESULTS, DataQualityError, check_landing, check_marts

DAYS = (PREVIOUS_DS, DS)
LANDING_SUITES = ("landing_events", "landing_items")
MART_SUITES = ("mart_training_examples", "mart_eval_examples", "mart_item_corpus")


def _events_of(ds: str) -> pd.DataFrame:
    """``good_events()`` (day DS) moved to day ``ds``."""
    events = good_events()
    events["event_time"] = events["event_time"] + (pd.Timestamp(ds) - pd.Timestamp(DS))
    return events


def _docs(
    home: Path, what: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Path:
    """``ebr docs WHAT`` on ``home``; the path it prints (its last line of stdout)."""
    monkeypatch.setenv("EBR_HOME", str(home))
    main(["docs", what])
    return Path(capsys.readouterr().out.strip().splitlines()[-1])


def _html(site: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in site.rglob("*.html"))


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Two days landed, checked, transformed by dbt and their marts checked."""
    settings = make_settings(tmp_path_factory.mktemp("ebr"))
    for ds in DAYS:
        write_landing(settings, _events_of(ds), good_items(), ds=ds)
        check_landing(ds, settings)
        dbt_build(ds, settings)
        check_marts(ds, settings)
    return settings


@pytest.mark.slow
def test_checks_keep_ge_results_and_a_rerun_replaces_them(checked: Settings) -> None:
    for ds in DAYS:
        folder = checked.report_day(ds) / GE_RESULTS
        names = sorted(p.stem for p in folder.glob("*.json"))
        assert names == sorted([*LANDING_SUITES, *MART_SUITES, "mart_user_features"])
        result = json.loads((folder / "mart_item_corpus.json").read_text())
        assert result["suite_name"] == f"mart_item_corpus.{ds}"
        assert result["success"] is True
        assert result["meta"]["run_id"]["run_name"] == f"ds={ds}"
        assert result["statistics"]["evaluated_expectations"] == len(result["results"]) > 3
    folder = checked.report_day(DS) / GE_RESULTS
    before = {p.name: p.read_text() for p in folder.glob("*.json")}
    check_landing(DS, checked)
    after = {p.name: p.read_text() for p in folder.glob("*.json")}
    assert after.keys() == before.keys()  # replaced, not added
    assert after["landing_items.json"] != before["landing_items.json"]  # a new check time


@pytest.mark.slow
def test_dbt_docs_document_the_warehouse(
    checked: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    index = _docs(checked.home, "dbt", monkeypatch, capsys)
    target = checked.home / "docs" / "dbt"
    assert index == target / "index.html" and index.is_file()
    assert (target / "static_index.html").is_file() and (target / "manifest.json").is_file()
    catalog = json.loads((target / "catalog.json").read_text())
    nodes = {node["metadata"]["name"]: node for node in catalog["nodes"].values()}
    for mart in ("mart_training_examples", "mart_eval_examples", "mart_item_corpus"):
        assert mart in nodes, sorted(nodes)
    columns = {c.lower() for c in nodes["mart_training_examples"]["columns"]}
    assert {"ds", "request_id", "item_id", "label_event"} <= columns
    # The models were compiled with the newest day of the warehouse.
    compiled = "\n".join(p.read_text() for p in (target / "compiled").rglob("*.sql"))
    assert f"date '{DS}'" in compiled
    # dbt ran in a child process: the warehouse is not left locked.
    duckdb.connect(str(checked.warehouse)).close()


@pytest.mark.slow
def test_expectations_docs_show_every_suite_and_day(
    checked: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    index = _docs(checked.home, "expectations", monkeypatch, capsys)
    site = checked.home / "docs" / "expectations"
    assert index == site / "index.html" and index.is_file()
    html = _html(site)
    for ds in DAYS:
        assert f"ds={ds}" in html  # the run of the day
        for suite in (*LANDING_SUITES, *MART_SUITES):
            assert f"{suite}.{ds}" in html
            assert (site / "expectations" / suite / f"{ds}.html").is_file()
        pages = list((site / "validations").glob(f"*/{ds}/ds={ds}/*/*.html"))
        assert len(pages) == len(LANDING_SUITES) + len(MART_SUITES) + 1  # + mart_user_features


def test_a_failed_check_is_documented_too(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    items = good_items()
    items.loc[2, "price"] = -3.0
    write_landing(settings, good_events(), items)
    with pytest.raises(DataQualityError):
        check_landing(DS, settings)
    kept = json.loads((settings.report_day(DS) / GE_RESULTS / "landing_items.json").read_text())
    assert kept["success"] is False
    index = _docs(settings.home, "expectations", monkeypatch, capsys)
    assert index.is_file()
    page = next((index.parent / "validations" / "landing_items").rglob("*.html")).read_text()
    assert f"landing_items.{DS}" in page and "Failed" in page


def test_docs_fail_clearly_with_nothing_to_document(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EBR_HOME", str(settings.home))
    with pytest.raises(SystemExit) as raised:
        main(["docs", "dbt"])
    message = str(raised.value.code)
    assert "ebr docs dbt:" in message and "does not exist yet" in message
    assert "make demo" in message
    assert not settings.warehouse.exists()  # not created by dbt on the way

    duckdb.connect(str(settings.warehouse)).close()  # a warehouse without any day
    with pytest.raises(SystemExit) as raised:
        main(["docs", "dbt"])
    assert "holds no transformed day yet" in str(raised.value.code)

    with pytest.raises(SystemExit) as raised:
        main(["docs", "expectations"])
    message = str(raised.value.code)
    assert "ebr docs expectations:" in message and "no validation results" in message
    assert "make demo" in message
    assert not (settings.home / "docs" / "expectations").exists()
