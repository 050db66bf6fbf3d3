"""Promotion (one alter_alias, only for a blessed candidate), the promotion log, and cleanup."""

from __future__ import annotations

import json
import logging
import shutil
from datetime import datetime, timezone

from ebr.settings import Settings
from indexing import store

log = logging.getLogger(__name__)


class GateRefused(RuntimeError):
    """The candidate was not blessed; the alias has not moved."""


def _log_path(settings: Settings):
    return settings.reports / "promotions.jsonl"


def history(settings: Settings) -> list[dict]:
    path = _log_path(settings)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def promote(report: dict, settings: Settings, run_id: str, allow_older: bool = False) -> dict | None:
    """Moves the alias to the gate report's candidate, if blessed, and logs the promotion.
    A candidate whose data day is older than the live one's is kept but not promoted unless
    allow_older (a backfill must not roll serving back in time); then returns None."""
    if not report["passed"]:
        raise GateRefused(f"ds={report['ds']}: candidate {report['candidate_collection']} not "
                          f"promoted, alias {settings.alias} unchanged: {'; '.join(report['reasons'])}")
    with store.connect(settings) as client:
        target = store.info(client, report["candidate_collection"])
        if not target.complete:
            raise GateRefused(f"{target.name} is not a complete collection; refusing to promote it")
        before = store.live(client, settings.alias)
        if before and before.ds > target.ds and not allow_older:
            log.warning("ds=%s stage=promote skipped: live model is from %s, newer than this day; "
                        "set allow_older to promote it", target.ds, before.ds)
            return None
        store.point_alias(client, settings.alias, target.name)
    entry = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # a log stamp, not a partition key
        "action": "promote", "alias": settings.alias, "collection": target.name,
        "model_version": target.model_version, "ds": target.ds,
        "previous_collection": before.name if before else None,
        "gate": {"k": report["gate_k"], "candidate": report["candidate_recall"],
                 "live": report["live_recall"]},
        "run_id": run_id,
    }
    path = _log_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(entry) + "\n")
    log.info("ds=%s stage=promote alias %s -> %s (model v%d)", target.ds, settings.alias,
             target.name, target.model_version)
    return entry


def clean(settings: Settings) -> list[str]:
    """Drops our collections past the retention count, never the live one nor the one before it,
    and the model artifacts that no kept collection or live lineage needs."""
    with store.connect(settings) as client:
        protected = store.aliased(client)
        entries = history(settings)
        if entries and entries[-1].get("previous_collection"):
            protected.add(entries[-1]["previous_collection"])
        names = store.ours(client)
        # newest first by (day, version) so retention keeps the most recent candidates
        ranked = sorted(names, key=lambda n: tuple(int(g) for g in store.NAME.match(n).groups()),
                        reverse=True)
        keep = set(ranked[: settings.retention]) | protected
        dropped = [n for n in ranked if n not in keep]
        for name in dropped:
            store.drop(client, name, protected)
        kept_versions = {store.info(client, n).model_version for n in keep if client.has_collection(n)}
    for name in dropped:
        version = int(store.NAME.match(name).group(2))
        path = settings.models / f"v{version}"
        if version not in kept_versions and path.exists():
            shutil.rmtree(path)
    log.info("stage=clean dropped %s", dropped)
    return dropped
