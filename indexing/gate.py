"""The offline recall gate: a candidate is blessed only if its Recall@K on the day's held-out
requests clears a floor and does not fall more than a margin below the live model's."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from ebr import warehouse
from ebr.settings import Settings
from indexing import store

if TYPE_CHECKING:  # training is imported by whoever loads the artifact
    from training.artifact import Artifact

log = logging.getLogger(__name__)


def recall_at_k(
    retrieved: list[list[str]], relevant: list[list[str]], ks: tuple[int, ...]
) -> dict[int, float]:
    """Mean over requests of |relevant ∩ top-K| / |relevant| (requests without relevant items skipped)."""
    sums = dict.fromkeys(ks, 0.0)
    n = 0
    for got, want in zip(retrieved, relevant):
        want_set = set(want)
        if not want_set:
            continue
        n += 1
        for k in ks:
            sums[k] += len(want_set.intersection(got[:k])) / len(want_set)
    return {k: (sums[k] / n if n else 0.0) for k in ks}


def read_eval(ds: str, settings: Settings) -> pa.Table:
    return warehouse.query(
        settings,
        "select * from mart_eval_examples where ds = cast(? as date) order by request_id",
        [ds],
    )


def retrieve(
    client, collection: str, artifact: Artifact, requests: pa.Table, k: int
) -> list[list[str]]:
    """The top-k item ids per request: artifact's user tower, then an ANN search of collection."""
    return store.search_ids(client, collection, artifact.encode_requests(requests), k)


def evaluate(
    client, collection: str, artifact: Artifact, requests: pa.Table, ks: tuple[int, ...]
) -> dict[int, float]:
    retrieved = retrieve(client, collection, artifact, requests, max(ks))
    return recall_at_k(retrieved, requests.column("clicked_items").to_pylist(), ks)


@dataclass
class GateReport:
    ds: str
    candidate_collection: str
    candidate_version: int
    candidate_recall: dict[int, float]
    live_collection: str | None
    live_version: int | None
    live_recall: dict[int, float] | None
    gate_k: int
    floor: float
    margin: float
    eval_requests: int
    passed: bool
    reasons: list[str]


def decide(candidate: float, live: float | None, floor: float, margin: float, k: int) -> list[str]:
    """Reasons to refuse; empty means blessed. The first run has no live model, only the floor."""
    reasons = []
    if candidate < floor:
        reasons.append(f"Recall@{k} {candidate:.4f} is below the floor {floor:.4f}")
    if live is not None and candidate < live - margin:
        reasons.append(
            f"Recall@{k} {candidate:.4f} regresses more than {margin:.4f} "
            f"against the live model's {live:.4f}"
        )
    return reasons


def run_gate(ds: str, candidate: Artifact, live: Artifact | None, settings: Settings) -> GateReport:
    """Evaluates candidate and live on the same held-out requests and writes gate.json whatever
    the outcome."""
    requests = read_eval(ds, settings)
    ks = tuple(sorted(set(settings.recall_ks) | {settings.gate_k}))
    cand_name = store.collection_name(ds, candidate.version)
    with store.connect(settings) as client:
        cand = evaluate(client, cand_name, candidate, requests, ks)
        current = store.live(client, settings.alias)
        # The collection the alias resolved to, not the alias: it may move while this runs.
        live_recall = (
            evaluate(client, current.name, live, requests, ks) if current and live else None
        )
    reasons = decide(
        cand[settings.gate_k],
        live_recall[settings.gate_k] if live_recall else None,
        settings.recall_floor,
        settings.regression_margin,
        settings.gate_k,
    )
    report = GateReport(
        ds=ds,
        candidate_collection=cand_name,
        candidate_version=candidate.version,
        candidate_recall=cand,
        live_collection=current.name if current else None,
        live_version=current.model_version if current else None,
        live_recall=live_recall,
        gate_k=settings.gate_k,
        floor=settings.recall_floor,
        margin=settings.regression_margin,
        eval_requests=requests.num_rows,
        passed=not reasons,
        reasons=reasons,
    )
    path = settings.report_day(ds) / "gate.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(report), indent=2))
    log.info(
        "ds=%s stage=gate candidate=%s recall=%s live=%s passed=%s %s",
        ds,
        cand_name,
        {k: round(v, 4) for k, v in cand.items()},
        live_recall,
        report.passed,
        reasons,
    )
    return report


def load_report(ds: str, settings: Settings) -> dict:
    path = settings.report_day(ds) / "gate.json"
    if not path.exists():
        raise FileNotFoundError(f"no gate report for ds={ds} at {path}: run the gate first")
    return json.loads(path.read_text())
