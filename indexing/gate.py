"""The offline recall gate: a candidate is blessed only if its Recall@K on the day's held-out
requests clears a floor and does not fall more than a margin below the live model's, and its
collection holds what the model retrieves.

Both models retrieve from the day's corpus by exact search (indexing.exact), so they are compared
on the same items (a live collection built days ago lacks today's new items), at matrix-product
speed: Milvus Lite answered ~95 queries/s at K=100 on the medium bench, 198 s of a 245 s gate.
The candidate's collection is then searched with the canary requests and must return, for at
least min_index_agreement of their top-K slots, an item scored as high as the exact K-th: the
index holds this model's vectors and HNSW finds them (ties count, whichever item the index
returns).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ebr import warehouse
from ebr.settings import Settings
from indexing import exact, store
from indexing.build import ENCODE_BATCH

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


def read_corpus(ds: str, settings: Settings) -> pa.Table:
    return warehouse.query(
        settings,
        "select item_id, title from mart_item_corpus where ds = cast(? as date) order by item_id",
        [ds],
    )


def read_eval(ds: str, settings: Settings) -> pa.Table:
    return warehouse.query(
        settings,
        "select * from mart_eval_examples where ds = cast(? as date) order by request_id",
        [ds],
    )


def read_gate_sample(ds: str, settings: Settings) -> tuple[pa.Table, int]:
    """At most settings.gate_requests of the day's held-out requests, the same ones on every
    rerun (the lowest md5 of request_id: a uniform sample, whatever order ids are handed out
    in), and how many the day held out."""
    with warehouse.reading(settings.warehouse) as con:
        day = "from mart_eval_examples where ds = cast(? as date)"
        held_out = con.execute(f"select count(*) {day}", [ds]).fetchall()[0][0]
        sample = con.sql(
            f"select * {day} order by md5(request_id) limit ?", params=[ds, settings.gate_requests]
        ).to_arrow_table()
    return sample, held_out


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
class Exact:
    """One model's exact top-K over the day's corpus for every held-out request."""

    query_vecs: np.ndarray
    item_vecs: np.ndarray
    rows: np.ndarray  # [requests, K] rows of item_vecs, best first
    scores: np.ndarray  # [requests, K]

    def recall(self, item_ids: pa.Array, requests: pa.Table, ks: tuple[int, ...]) -> dict:
        top = item_ids.take(self.rows.ravel()).to_numpy(zero_copy_only=False)
        retrieved = top.reshape(self.rows.shape).tolist()
        return recall_at_k(retrieved, requests.column("clicked_items").to_pylist(), ks)


def exact_search(artifact: Artifact, corpus: pa.Table, requests: pa.Table, k: int) -> Exact:
    items = [artifact.encode_items(b) for b in corpus.to_batches(ENCODE_BATCH)]
    item_vecs = np.concatenate([np.zeros((0, artifact.dim), np.float32), *items])
    query_vecs = artifact.encode_requests(requests)
    return Exact(query_vecs, item_vecs, *exact.top_k(query_vecs, item_vecs, k))


def index_agreement(
    client, collection: str, found: Exact, item_ids: pa.Array, n: int, k: int
) -> float:
    """Share of the top-k slots of the first `n` requests where the collection's hit scores (by
    the model's own vectors) at least the exact k-th best; a hit the corpus lacks scores -inf."""
    if n == 0 or len(item_ids) == 0:
        return 1.0
    k = min(k, found.rows.shape[1])
    hits = store.search_ids(client, collection, found.query_vecs[:n], k)
    row_of = {item: row for row, item in enumerate(item_ids.to_pylist())}
    good = 0
    for q, kth, got in zip(found.query_vecs[:n], found.scores[:n, k - 1], hits):
        rows = np.array([row_of.get(item, -1) for item in got], dtype=np.int64)
        scores = np.where(rows >= 0, found.item_vecs[rows] @ q, -np.inf)
        good += int((scores >= kth - 1e-4 * max(abs(float(kth)), 1.0)).sum())
    return good / (n * k)


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
    eval_requests: int  # scored: at most settings.gate_requests of held_out_requests
    held_out_requests: int
    index_agreement: float  # see index_agreement
    index_requests: int
    min_index_agreement: float
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
    """Evaluates candidate and live on the same held-out requests and corpus, checks the
    candidate's collection, and writes gate.json whatever the outcome."""
    (requests, held_out), corpus = read_gate_sample(ds, settings), read_corpus(ds, settings)
    item_ids = corpus.column("item_id").combine_chunks()
    ks = tuple(sorted(set(settings.recall_ks) | {settings.gate_k}))
    cand_name = store.collection_name(ds, candidate.version)
    found = exact_search(candidate, corpus, requests, max(ks))
    cand = found.recall(item_ids, requests, ks)
    sample = min(settings.canary_requests, requests.num_rows)
    with store.connect(settings) as client:
        current = store.live(client, settings.alias)
        agreement = index_agreement(client, cand_name, found, item_ids, sample, settings.gate_k)
    live_recall = (
        exact_search(live, corpus, requests, max(ks)).recall(item_ids, requests, ks)
        if current and live
        else None
    )
    reasons = decide(
        cand[settings.gate_k],
        live_recall[settings.gate_k] if live_recall else None,
        settings.recall_floor,
        settings.regression_margin,
        settings.gate_k,
    )
    if agreement < settings.min_index_agreement:
        reasons.append(
            f"{cand_name} returned {agreement:.1%} of exact search's top-{settings.gate_k} on "
            f"{sample} requests, below "
            f"{settings.min_index_agreement:.0%}: the index does not serve what the model retrieves"
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
        held_out_requests=held_out,
        index_agreement=agreement,
        index_requests=sample,
        min_index_agreement=settings.min_index_agreement,
        passed=not reasons,
        reasons=reasons,
    )
    path = settings.report_day(ds) / "gate.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(report), indent=2))
    log.info(
        "ds=%s stage=gate candidate=%s recall=%s live=%s index_agreement=%.3f passed=%s %s",
        ds,
        cand_name,
        {k: round(v, 4) for k, v in cand.items()},
        live_recall,
        agreement,
        report.passed,
        reasons,
    )
    return report


def load_report(ds: str, settings: Settings) -> dict:
    path = settings.report_day(ds) / "gate.json"
    if not path.exists():
        raise FileNotFoundError(f"no gate report for ds={ds} at {path}: run the gate first")
    return json.loads(path.read_text())
