"""Promotion (one alter_alias, only for a blessed candidate), rollback, the promotion log, cleanup.

The promotion log, `reports/promotions.jsonl`, is the lineage of what served: one JSON object per
alias move (see docs/contracts.md). In every entry `previous_collection` is the collection a
plain rollback goes to next, which clean() keeps:
- promote X: the collection the alias left for X;
- rollback or auto-rollback to X: X's own predecessor, i.e. the `previous_collection` of the latest
  earlier entry that put X on the alias. Repeated rollbacks therefore walk back through the
  promotion history instead of bouncing back to the collection just rolled away from (that one is
  `replaced_collection`; `--to` returns to it explicitly).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import shutil
import subprocess
import time
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

from ebr.settings import Settings
from indexing import store

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
MAX_USER = 256
MAX_REASON = 1000


class GateRefused(RuntimeError):
    """The candidate was not blessed; the alias has not moved."""


class RollbackRefused(RuntimeError):
    """The rollback target is missing, incomplete or lacks its model; the alias has not moved."""


@functools.cache
def code_version() -> str:
    """The git commit of this checkout, else the installed package version (once per process)."""
    try:
        # --show-toplevel guards against an installed copy that merely lies inside another repo
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        lines = out.stdout.split()
        if out.returncode == 0 and len(lines) == 2 and Path(lines[0]).resolve() == REPO:
            return lines[1]
    except (OSError, subprocess.SubprocessError):
        pass  # no git, or git hung: fall back to the package version
    try:
        return importlib.metadata.version("ebr-fresh")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _log_path(settings: Settings) -> Path:
    return settings.reports / "promotions.jsonl"


def history(settings: Settings) -> list[dict]:
    path = _log_path(settings)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append(settings: Settings, entry: dict) -> None:
    path = _log_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(entry) + "\n")


def _gate_figures(report: dict) -> dict:
    return {
        "k": report["gate_k"],
        "candidate": report["candidate_recall"],
        "live": report["live_recall"],
    }


def _entry(
    action: str,
    settings: Settings,
    run_id: str,
    target: store.CollectionInfo | None,
    replaced: store.CollectionInfo | None,
    previous: str | None,
    gate: dict | None,
    **extra: str,
) -> dict:
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),  # a log stamp, not a partition key
        "action": action,
        "alias": settings.alias,
        "collection": target.name if target else None,
        "model_version": target.model_version if target else None,
        "ds": target.ds if target else None,
        "previous_collection": previous,
        "replaced_collection": replaced.name if replaced else None,
        "gate": gate,
        "code_version": code_version(),
        "run_id": run_id,
        **extra,
    }


def _latest_for(entries: list[dict], name: str) -> dict | None:
    """The latest entry that put `name` on the alias."""
    return next((e for e in reversed(entries) if e.get("collection") == name), None)


def _restored_predecessor(
    entries: list[dict], target: store.CollectionInfo, replaced: store.CollectionInfo | None
) -> str | None:
    """previous_collection after rolling back to target: the lineage recorded when target last
    served; for a collection that never served, the one it replaces (so a rollback undoes it)."""
    earlier = _latest_for(entries, target.name)
    if earlier:
        return earlier["previous_collection"]
    return replaced.name if replaced else None


def promote(
    report: dict, settings: Settings, run_id: str, allow_older: bool = False
) -> dict | None:
    """Moves the alias to the gate report's candidate, if blessed, and logs the promotion.
    A candidate whose data day is older than the live one's is kept but not promoted unless
    allow_older (a backfill must not roll serving back in time); then returns None."""
    if not report["passed"]:
        raise GateRefused(
            f"ds={report['ds']}: candidate {report['candidate_collection']} not "
            f"promoted, alias {settings.alias} unchanged: {'; '.join(report['reasons'])}"
        )
    entries = history(settings)
    with store.connect(settings) as client:
        target = store.info(client, report["candidate_collection"])
        if not target.complete:
            raise GateRefused(f"{target.name} is not a complete collection; refusing to promote it")
        before = store.live(client, settings.alias)
        if before and before.ds > target.ds and not allow_older:
            log.warning(
                "ds=%s stage=promote skipped: live model is from %s, newer than this day; "
                "set allow_older to promote it",
                target.ds,
                before.ds,
            )
            return None
        if (
            before
            and before.name == target.name
            and entries
            and not _latest_for(entries, target.name)
        ):
            # The alias moved but the process died before logging it: what the log says served
            # last is what this promotion replaced, so the retry records the true lineage.
            unlogged = entries[-1]["collection"]
            before = (
                store.info(client, unlogged)
                if unlogged and client.has_collection(unlogged)
                else None
            )
        store.point_alias(client, settings.alias, target.name)
    # A promotion replaces what served; re-promoting the live collection (a rerun) keeps its lineage.
    rerun = before is not None and before.name == target.name
    previous = (
        _restored_predecessor(entries, target, None) if rerun else (before.name if before else None)
    )
    entry = _entry("promote", settings, run_id, target, before, previous, _gate_figures(report))
    _append(settings, entry)
    log.info(
        "ds=%s stage=promote alias %s -> %s (model v%d)",
        target.ds,
        settings.alias,
        target.name,
        target.model_version,
    )
    return entry


def _plain_text(name: str, value: str, limit: int) -> str:
    """Operator text is stored as JSON data and printed by `ebr history`: bounded, one line."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    if len(value) > limit:
        raise ValueError(f"{name} is {len(value)} characters long; at most {limit} are kept")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError(f"{name} must not contain control characters (newlines, escapes)")
    return value.strip()


def _one_line(text: str, limit: int) -> str:
    """Machine-made text (error messages) kept like operator text: control characters blanked."""
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)[:limit]


def check_collection_name(name: str) -> str:
    if not isinstance(name, str) or not store.NAME.fullmatch(name):
        raise ValueError(f"to must name a collection items_<yyyymmdd>_v<N>, got {name!r}")
    return name


def _restorable(client, settings: Settings, name: str) -> store.CollectionInfo:
    """The collection to roll back to, if it can serve: complete, with its model artifact."""
    if not client.has_collection(name):
        raise RollbackRefused(f"{name} does not exist; alias {settings.alias} unchanged")
    target = store.info(client, name)
    if not target.complete:
        raise RollbackRefused(
            f"{name} is not a complete collection; alias {settings.alias} unchanged"
        )
    if not (settings.models / f"v{target.model_version}" / "model.pt").is_file():
        raise RollbackRefused(
            f"{name} was built by model v{target.model_version}, whose artifact is "
            f"gone; alias {settings.alias} unchanged"
        )
    return target


def _restored_gate(
    entries: list[dict], target: store.CollectionInfo, settings: Settings
) -> dict | None:
    """The gate figures that blessed the restored collection, if it was ever gated."""
    earlier = _latest_for(entries, target.name)
    if earlier:
        return earlier.get("gate")
    path = settings.report_day(target.ds) / "gate.json"
    report = json.loads(path.read_text()) if path.exists() else None
    return (
        _gate_figures(report) if report and report["candidate_collection"] == target.name else None
    )


def rollback(
    settings: Settings, run_id: str, user: str, reason: str, to: str | None = None
) -> dict:
    """Moves the alias, in one alter_alias, to `to` or else to the latest log entry's
    previous_collection (see the module doc: repeated rollbacks walk back the lineage), only if
    that collection is complete and its model artifact exists; logs a "rollback" entry.
    Raises ValueError for malformed input and RollbackRefused when there is nothing to go to."""
    user, reason = _plain_text("user", user, MAX_USER), _plain_text("reason", reason, MAX_REASON)
    entries = history(settings)
    name = (
        check_collection_name(to)
        if to is not None
        else (entries[-1]["previous_collection"] if entries else None)
    )
    if name is None:
        raise RollbackRefused(
            f"the promotion log names no collection before the live one; alias "
            f"{settings.alias} unchanged (name one with --to)"
        )
    with store.connect(settings) as client:
        before = store.live(client, settings.alias)
        target = _restorable(client, settings, name)
        if before and before.name == target.name:
            raise RollbackRefused(f"{name} already serves behind {settings.alias}")
        store.point_alias(client, settings.alias, target.name)
    entry = _entry(
        "rollback",
        settings,
        run_id,
        target,
        before,
        _restored_predecessor(entries, target, before),
        _restored_gate(entries, target, settings),
        user=user,
        reason=reason,
    )
    _append(settings, entry)
    log.warning(
        "stage=rollback alias %s -> %s (model v%d) by %s: %s",
        settings.alias,
        target.name,
        target.model_version,
        user,
        reason,
    )
    return entry


def auto_rollback(settings: Settings, failed: dict, run_id: str, reason: str) -> dict:
    """Undoes the promotion `failed` (its log entry) after a failed canary: the alias goes back to
    its previous_collection when that can still serve; otherwise (a first promotion, or the
    previous one gone) the alias is removed. Services then get "no alias", which they already
    handle from before the first promotion, instead of answers from an index known to be broken,
    and the next day trains from scratch rather than warm-starting from the broken model."""
    entries = history(settings)
    with store.connect(settings) as client:
        before = store.live(client, settings.alias)
        target = None
        if failed["previous_collection"]:
            try:
                target = _restorable(client, settings, failed["previous_collection"])
            except RollbackRefused as e:
                reason = f"{reason}; cannot go back: {e}"
        if target:
            store.point_alias(client, settings.alias, target.name)
        elif before:
            store.remove_alias(client, settings.alias)
    entry = _entry(
        "auto-rollback",
        settings,
        run_id,
        target,
        before,
        _restored_predecessor(entries, target, before) if target else None,
        _restored_gate(entries, target, settings) if target else None,
        user="canary",
        reason=_one_line(reason, MAX_REASON),
    )
    _append(settings, entry)
    log.error(
        "stage=promote auto-rollback of %s: alias %s -> %s: %s",
        failed["collection"],
        settings.alias,
        target.name if target else "removed",
        reason,
    )
    return entry


def remove_debris(settings: Settings, min_age_s: float | None = None) -> dict:
    """Removes what runs killed mid-stage left behind (clean() starts with this):
    - our collections without the complete mark (store.incomplete: a build that died before
      finish()) unless aliased; an aliased one cannot be incomplete, since promote() and
      rollback() refuse those, and is logged and left if it ever is. On a Milvus server, one
      younger than min_age_s may still be building in another process and is left; Milvus Lite
      gives no creation time but lets one process at a time open its file (an flock), so while we
      hold it no build can be running elsewhere. A rerun of build_index for the same day needs
      none of this: store.create already replaces a non-live collection of the same name;
    - the temporary folders of artifact saves that died, untouched for min_age_s seconds
      (default training.artifact.DEBRIS_MIN_AGE_S), restoring an old vN a killed save had moved
      aside (see training.artifact.clear_debris).
    Returns {"collections": dropped names, "artifacts": removed folder names, "restored": vN
    names put back}. Model artifacts of dropped collections stay: a rerun of the day needs them,
    and clean()'s retention removes them with the collections that use them."""
    from training.artifact import DEBRIS_MIN_AGE_S, clear_debris  # torch: only when cleaning

    min_age_s = DEBRIS_MIN_AGE_S if min_age_s is None else min_age_s
    dropped = []
    with store.connect(settings) as client:
        protected = store.aliased(client)
        for name in store.incomplete(client):
            if name in protected:
                log.error(
                    "stage=clean %s is aliased but not complete: promotion should have refused "
                    "it; left in place",
                    name,
                )
                continue
            created = store.created_at(client, name)
            if created is not None and time.time() - created < min_age_s:
                log.info(
                    "stage=clean %s is incomplete but only %.0f s old: may still be building",
                    name,
                    time.time() - created,
                )
                continue
            store.drop(client, name, protected)
            dropped.append(name)
    artifacts = clear_debris(settings.models, min_age_s)
    removed = {
        "collections": dropped,
        "artifacts": artifacts["removed"],
        "restored": artifacts["restored"],
    }
    if any(removed.values()):
        log.warning("stage=clean removed debris of killed runs: %s", removed)
    return removed


def clean(settings: Settings) -> list[str]:
    """Drops our collections past the retention count, never the live one nor the latest log
    entry's previous_collection (where the next plain rollback goes, also after a rollback), and
    the model artifacts that no kept collection needs. Starts with remove_debris() (runs killed
    mid-stage)."""
    remove_debris(settings)
    with store.connect(settings) as client:
        protected = store.aliased(client)
        entries = history(settings)
        if entries and entries[-1].get("previous_collection"):
            protected.add(entries[-1]["previous_collection"])
        names = store.ours(client)
        # newest first by (day, version) so retention keeps the most recent candidates
        ranked = sorted(names, key=store.day_and_version, reverse=True)
        keep = set(ranked[: settings.retention]) | protected
        dropped = [n for n in ranked if n not in keep]
        for name in dropped:
            store.drop(client, name, protected)
        kept_versions = {
            store.info(client, n).model_version for n in keep if client.has_collection(n)
        }
    for name in dropped:
        version = store.day_and_version(name)[1]
        path = settings.models / f"v{version}"
        if version not in kept_versions and path.exists():
            shutil.rmtree(path)
    log.info("stage=clean dropped %s", dropped)
    return dropped
