"""One entry function per pipeline stage; the DAG and the CLI call these and nothing deeper.

Each stage reads and writes the partition of one data day `ds` (from the data interval), so a
rerun of a day replaces that day's outputs and nothing else.
"""

from __future__ import annotations

import logging
import re
from datetime import date
from pathlib import Path

from ebr.settings import Settings

log = logging.getLogger(__name__)
ISO_DAY = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
)  # ASCII only: \d also matches other scripts' digits


def iso_day(value: str, name: str = "ds") -> str:
    """A data day reaches SQL filters, dbt vars and paths: only a real YYYY-MM-DD date passes
    (date.fromisoformat alone also takes 20260101 and week dates)."""
    if not isinstance(value, str) or not ISO_DAY.fullmatch(value):
        raise ValueError(f"{name} must be an ISO date YYYY-MM-DD, got {value!r}")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be a real date YYYY-MM-DD, got {value!r}") from None
    return value


def check_landing(ds: str, settings: Settings) -> dict:
    iso_day(ds)
    from expectations.runner import check_landing as run

    return run(ds, settings)


def transform(ds: str, settings: Settings) -> None:
    """The dbt build of one day (the DAG runs the same project model by model through Cosmos)."""
    iso_day(ds)
    from ebr.transform import dbt_build

    dbt_build(ds, settings)


def check_marts(ds: str, settings: Settings) -> dict:
    iso_day(ds)
    from expectations.runner import check_marts as run

    return run(ds, settings)


def live_model(settings: Settings) -> Path | None:
    """The artifact of the model that built the collection the alias serves."""
    from indexing import store

    with store.connect(settings) as client:
        current = store.live(client, settings.alias)
    return settings.models / f"v{current.model_version}" if current else None


def _version_for(ds: str, settings: Settings, live: Path | None) -> int:
    """A rerun of a day replaces that day's never-promoted candidate; otherwise the next version.
    A model that ever served keeps its artifact: its collection may be rolled back to, and the
    client must find the very encoder that built it (a backfill of an old day gets a new version)."""
    from indexing.promote import history
    from training.artifact import latest_version, load_meta

    served = {entry["model_version"] for entry in history(settings)}
    for path in sorted(settings.models.glob("v*")):
        meta = load_meta(path)
        if meta and meta["ds"] == ds and path != live and meta["version"] not in served:
            return int(meta["version"])
    return latest_version(settings.models) + 1


def train(ds: str, settings: Settings) -> int:
    """Warm-starts from the live model (from scratch on the first day) and trains on the day."""
    iso_day(ds)
    from training.train import train_day

    base = live_model(settings)
    version = _version_for(ds, settings, base)
    log.info("ds=%s stage=train version=v%d warm_start=%s", ds, version, base)
    return train_day(ds, settings, base=base, version=version).version


def build_index(ds: str, version: int, settings: Settings) -> str:
    iso_day(ds)
    from indexing.build import build_collection
    from training.artifact import load_artifact

    return build_collection(ds, load_artifact(settings.models / f"v{version}"), settings)


def gate(ds: str, version: int, settings: Settings) -> dict:
    """The recall gate, and the canary's baseline: the candidate's recall on the canary requests."""
    iso_day(ds)
    from dataclasses import asdict

    from indexing.canary import record_baseline
    from indexing.gate import run_gate
    from training.artifact import load_artifact

    live = live_model(settings)
    candidate = load_artifact(settings.models / f"v{version}")
    report = run_gate(ds, candidate, load_artifact(live) if live else None, settings)
    record_baseline(ds, candidate, settings)
    return asdict(report)


def promote(ds: str, settings: Settings, run_id: str, allow_older: bool = False) -> dict | None:
    """Moves the alias if the day's candidate was blessed (see indexing.promote.promote), then runs
    the canary through the serving client; a failed canary moves the alias back and raises
    indexing.canary.CanaryFailed."""
    iso_day(ds)
    from indexing.canary import run_canary
    from indexing.gate import load_report
    from indexing.promote import promote as move

    entry = move(load_report(ds, settings), settings, run_id, allow_older=allow_older)
    if entry is None:
        return None
    return {**entry, "canary": run_canary(ds, entry, settings, run_id)}


def rollback(
    settings: Settings, run_id: str, user: str, reason: str, to: str | None = None
) -> dict:
    """An operator's rollback of the alias (see indexing.promote.rollback)."""
    from indexing.promote import rollback as move_back

    return move_back(settings, run_id, user, reason, to=to)


def clean(settings: Settings) -> list[str]:
    from indexing.promote import clean as run

    return run(settings)


def report(ds: str, settings: Settings, run_id: str) -> str:
    """The day's report for a person (ebr.run_report): reports/ds=DAY/report.md and its plots."""
    iso_day(ds)
    from ebr.run_report import write

    path = write(ds, settings, run_id)
    log.info("ds=%s stage=report %s", ds, path)
    return str(path)
