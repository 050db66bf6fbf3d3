"""One entry function per pipeline stage; the DAG and the CLI call these and nothing deeper.

Each stage reads and writes the partition of one data day `ds` (from the data interval), so a
rerun of a day replaces that day's outputs and nothing else.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ebr.settings import Settings

log = logging.getLogger(__name__)


def check_landing(ds: str, settings: Settings) -> dict:
    from expectations.runner import check_landing as run

    return run(ds, settings)


def transform(ds: str, settings: Settings) -> None:
    """The dbt build of one day (the DAG runs the same project model by model through Cosmos)."""
    from ebr.transform import dbt_build

    dbt_build(ds, settings)


def check_marts(ds: str, settings: Settings) -> dict:
    from expectations.runner import check_marts as run

    return run(ds, settings)


def live_model(settings: Settings) -> Path | None:
    """The artifact of the model that built the collection the alias serves."""
    from indexing import store

    with store.connect(settings) as client:
        current = store.live(client, settings.alias)
    return settings.models / f"v{current.model_version}" if current else None


def _version_for(ds: str, settings: Settings, live: Path | None) -> int:
    """A rerun of a day replaces that day's unpromoted candidate; otherwise the next version."""
    from training.artifact import latest_version, load_meta

    for path in sorted(settings.models.glob("v*")):
        meta = load_meta(path)
        if meta and meta["ds"] == ds and path != live:
            return int(meta["version"])
    return latest_version(settings.models) + 1


def train(ds: str, settings: Settings) -> int:
    """Warm-starts from the live model (from scratch on the first day) and trains on the day."""
    from training.train import train_day

    base = live_model(settings)
    version = _version_for(ds, settings, base)
    log.info("ds=%s stage=train version=v%d warm_start=%s", ds, version, base)
    return train_day(ds, settings, base=base, version=version).version


def build_index(ds: str, version: int, settings: Settings) -> str:
    from indexing.build import build_collection
    from training.artifact import load_artifact

    return build_collection(ds, load_artifact(settings.models / f"v{version}"), settings)


def gate(ds: str, version: int, settings: Settings) -> dict:
    from dataclasses import asdict

    from indexing.gate import run_gate
    from training.artifact import load_artifact

    live = live_model(settings)
    report = run_gate(ds, load_artifact(settings.models / f"v{version}"),
                      load_artifact(live) if live else None, settings)
    return asdict(report)


def promote(ds: str, settings: Settings, run_id: str, allow_older: bool = False) -> dict | None:
    """Moves the alias if the day's candidate was blessed (see indexing.promote.promote)."""
    from indexing.gate import load_report
    from indexing.promote import promote as move

    return move(load_report(ds, settings), settings, run_id, allow_older=allow_older)


def clean(settings: Settings) -> list[str]:
    from indexing.promote import clean as run

    return run(settings)
