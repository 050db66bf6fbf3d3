"""`ebr docs`: dbt docs and Great Expectations Data Docs as static sites under EBR_HOME/docs/.

- :func:`build_dbt_docs`: the real ``dbt docs generate`` of ``transforms/`` against the
  warehouse, target path ``EBR_HOME/docs/dbt/`` (``index.html``, ``static_index.html``,
  ``manifest.json``, ``catalog.json``).
- :func:`build_expectations_docs`: GE Data Docs in ``EBR_HOME/docs/expectations/`` from the
  validation results the checks kept (``reports/ds=DAY/ge/<suite>.json``, see
  ``expectations.runner``): each result's suite (its expectations as validated) and the result
  itself go into an in-memory GE context whose one docs site is that folder. Nothing is
  validated again: the site shows what the pipeline decided on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb

from ebr.settings import Settings

_RUN_A_DAY = "run `make demo`, or a day (`airflow dags test ebr_daily YYYY-MM-DD`), first"


class NothingToDocument(Exception):
    """What the docs are built from does not exist yet (no warehouse, no validation results)."""


def docs_dir(settings: Settings) -> Path:
    return settings.home / "docs"


# --------------------------------------------------------------------------------------------
# dbt


def latest_warehouse_day(settings: Settings) -> str:
    """The newest day in ``mart_item_corpus``; :class:`NothingToDocument` when there is none."""
    warehouse = settings.warehouse
    if not warehouse.is_file():
        raise NothingToDocument(f"warehouse {warehouse} does not exist yet: {_RUN_A_DAY}")
    try:
        connection = duckdb.connect(str(warehouse), read_only=True)
    except duckdb.Error as error:  # e.g. locked by a running transform
        raise RuntimeError(f"cannot read warehouse {warehouse}: {error}") from error
    try:
        tables = {
            r[0] for r in connection.execute("select table_name from duckdb_tables()").fetchall()
        }
        row = (
            connection.execute("select max(ds) from mart_item_corpus").fetchone()
            if "mart_item_corpus" in tables
            else None
        )
    finally:
        connection.close()
    if row is None or row[0] is None:
        raise NothingToDocument(f"warehouse {warehouse} holds no transformed day yet: {_RUN_A_DAY}")
    return str(row[0])


def build_dbt_docs(settings: Settings) -> Path:
    """``dbt docs generate`` into ``EBR_HOME/docs/dbt/``; returns the path of its index.html.

    Models are compiled with the vars of the newest day in the warehouse.
    """
    from ebr.transform import dbt_docs_generate

    ds = latest_warehouse_day(settings)
    target = docs_dir(settings) / "dbt"
    dbt_docs_generate(ds, settings, target)
    index = target / "index.html"
    if not (index.is_file() and (target / "catalog.json").is_file()):
        raise RuntimeError(f"dbt docs generate left no index.html and catalog.json in {target}")
    return index


# --------------------------------------------------------------------------------------------
# Great Expectations


def stored_results(settings: Settings) -> list[Path]:
    """The kept validation results, ``reports/ds=DAY/ge/<suite>.json``, by day then suite."""
    from expectations.runner import GE_RESULTS

    return sorted(settings.reports.glob(f"ds=*/{GE_RESULTS}/*.json"))


def build_expectations_docs(settings: Settings) -> Path:
    """GE Data Docs of every kept validation result; returns the path of the site's index.html.

    The folder is rebuilt from scratch, so a day whose results are gone leaves no page behind.
    """
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import (
        expectationSuiteValidationResultSchema,
    )
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    paths = stored_results(settings)
    if not paths:
        older = sorted(settings.reports.glob("ds=*/dq_*.json"))
        hint = (
            f" (the {len(older)} check summaries there are from before checks kept GE's "
            "results: rerun those days)"
            if older
            else ""
        )
        raise NothingToDocument(
            f"no validation results under {settings.reports}/ds=*/ge/ yet{hint}: {_RUN_A_DAY}"
        )
    site = docs_dir(settings) / "expectations"
    shutil.rmtree(site, ignore_errors=True)
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            "ebr": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(site),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    added: set[str] = set()
    for path in paths:
        result = expectationSuiteValidationResultSchema.load(json.loads(path.read_text()))
        # The suite as validated: exactly the expectations (and their day's bounds) of the result.
        if result.suite_name not in added:
            added.add(result.suite_name)
            context.suites.add(
                gx.ExpectationSuite(
                    name=result.suite_name,
                    expectations=[r.expectation_config for r in result.results],
                )
            )
        run = (result.meta or {}).get("run_id") or {}
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=result.suite_name),
            run_id=RunIdentifier(
                run_name=run.get("run_name", path.parent.parent.name),
                run_time=run.get("run_time"),
            ),
            batch_identifier=path.stem,  # no "/" allowed: the suite without its day
        )
        context.validation_results_store.set(key, result)
    context.build_data_docs(site_names=["ebr"])
    index = site / "index.html"
    if not index.is_file():
        raise RuntimeError(f"Great Expectations built no index.html in {site}")
    return index
