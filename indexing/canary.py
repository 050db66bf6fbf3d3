"""The post-promotion canary: right after the alias moves, the day's first held-out requests are
replayed through the client services use (alias -> collection -> model recorded on it), and their
Recall@gate_k is compared with what the gate measured on the same requests.

Healthy, both figures are the same computation (same vectors, same collection, same search), so
the margin only absorbs float noise; a gap means serving differs from what was gated: the alias
points elsewhere, the recorded model version or its weights are not the ones gated, results are
empty. Then the promotion is undone (indexing.promote.auto_rollback) and CanaryFailed is raised.
The baseline is measured on the same subset rather than taken from the gate's whole-set figure:
50 requests vary by more than a 0.05 margin from the whole set's mean.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from ebr.settings import Settings
from indexing import store
from indexing.gate import evaluate, read_eval, recall_at_k
from indexing.promote import auto_rollback

if TYPE_CHECKING:  # training is imported by whoever loads the artifact
    from training.artifact import Artifact

log = logging.getLogger(__name__)
BASELINE = "canary_baseline.json"
REPORT = "canary.json"


class CanaryFailed(RuntimeError):
    """The promoted collection failed its canary; the alias was moved back (or removed)."""


def canary_requests(ds: str, settings: Settings) -> pa.Table:
    """The fixed canary set: the first canary_requests held-out requests of the day by request_id."""
    return read_eval(ds, settings).slice(0, settings.canary_requests)


def record_baseline(ds: str, candidate: Artifact, settings: Settings) -> dict:
    """At gate time: the gated model's Recall@gate_k on the canary requests, on its collection."""
    requests = canary_requests(ds, settings)
    name = store.collection_name(ds, candidate.version)
    with store.connect(settings) as client:
        recall = evaluate(client, name, candidate, requests, (settings.gate_k,))[settings.gate_k]
    baseline = {
        "ds": ds,
        "collection": name,
        "model_version": candidate.version,
        "k": settings.gate_k,
        "request_ids": requests.column("request_id").to_pylist(),
        "recall": recall,
    }
    _write(settings, ds, BASELINE, baseline)
    return baseline


def _write(settings: Settings, ds: str, file: str, data: dict) -> None:
    path = settings.report_day(ds) / file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def _baseline(ds: str, collection: str, settings: Settings) -> dict:
    path = settings.report_day(ds) / BASELINE
    baseline = json.loads(path.read_text()) if path.exists() else None
    if not baseline or baseline["collection"] != collection:
        raise LookupError(
            f"no canary baseline for {collection} at {path}: the gate stage records it"
        )
    return baseline


def _replay(ds: str, promoted: dict, settings: Settings) -> tuple[dict, float, list[str]]:
    """Serves the baseline's requests through the alias; returns baseline, recall and problems."""
    from ebr.client import RetrievalClient  # loads torch: only when a canary runs

    baseline = _baseline(ds, promoted["collection"], settings)
    if not baseline["request_ids"]:
        raise LookupError(
            f"mart_eval_examples has no held-out requests for ds={ds}: nothing to check"
        )
    table = read_eval(ds, settings)
    requests = table.filter(
        pc.is_in(table["request_id"], value_set=pa.array(baseline["request_ids"]))
    )
    if requests.num_rows != len(baseline["request_ids"]):
        raise LookupError(
            f"the canary's {len(baseline['request_ids'])} requests are not in "
            f"mart_eval_examples of {ds} any more (found {requests.num_rows})"
        )
    served = RetrievalClient(settings).search_requests(requests, k=baseline["k"])
    problems = []
    if served["collection"] != promoted["collection"]:
        problems.append(
            f"alias {settings.alias} resolves to {served['collection']}, "
            f"not the promoted {promoted['collection']}"
        )
    empty = sum(not hits for hits in served["results"])
    if empty:
        problems.append(f"{empty} of {requests.num_rows} requests got no items")
    retrieved = [[h["item_id"] for h in hits] for hits in served["results"]]
    k = baseline["k"]
    recall = recall_at_k(retrieved, requests.column("clicked_items").to_pylist(), (k,))[k]
    return baseline, recall, problems


def check(ds: str, promoted: dict, settings: Settings) -> dict:
    """The canary verdict on the promotion `promoted` (its log entry); writes nothing."""
    baseline, recall = None, None
    try:
        baseline, recall, problems = _replay(ds, promoted, settings)
    except Exception as e:  # whatever breaks the serving path fails the canary, by definition
        problems = [f"{type(e).__name__}: {e}"]
    if (
        baseline is not None
        and recall is not None
        and recall < baseline["recall"] - settings.canary_margin
    ):
        problems.append(
            f"Recall@{baseline['k']} through the alias {recall:.4f} is below the gate's "
            f"{baseline['recall']:.4f} on the same requests minus {settings.canary_margin}"
        )
    return {
        "ds": ds,
        "alias": settings.alias,
        "collection": promoted["collection"],
        "model_version": promoted["model_version"],
        "k": baseline["k"] if baseline else settings.gate_k,
        "requests": len(baseline["request_ids"]) if baseline else 0,
        "recall": recall,
        "expected_recall": baseline["recall"] if baseline else None,
        "margin": settings.canary_margin,
        "passed": not problems,
        "problems": problems,
    }


def run_canary(ds: str, promoted: dict, settings: Settings, run_id: str) -> dict:
    """Checks the promotion just made; on failure moves the alias back (or removes it), then raises
    CanaryFailed. Writes reports/ds=<ds>/canary.json either way."""
    report = {**check(ds, promoted, settings), "rolled_back_to": None, "alias_removed": False}
    if not report["passed"]:
        reason = f"canary failed for {promoted['collection']}: {'; '.join(report['problems'])}"
        undone = auto_rollback(settings, promoted, run_id, reason)
        report.update(
            rolled_back_to=undone["collection"], alias_removed=undone["collection"] is None
        )
        _write(settings, ds, REPORT, report)
        raise CanaryFailed(
            f"{reason}; alias {settings.alias} "
            f"{'back on ' + undone['collection'] if undone['collection'] else 'removed'}"
        )
    _write(settings, ds, REPORT, report)
    log.info(
        "ds=%s stage=canary %s Recall@%d %.4f (gate %.4f) on %d requests: passed",
        ds,
        promoted["collection"],
        report["k"],
        report["recall"],
        report["expected_recall"],
        report["requests"],
    )
    return report
