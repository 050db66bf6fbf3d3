"""The day's steps as the benchmark runs them, each in its own process (benchmarks.child): the
real stage function of ebr.stages, with probes timing the calls inside it that the report breaks
its time into (encoding, inserting, index building, searching)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date

import numpy as np
import pyarrow as pa

from ebr import stages
from ebr.settings import Settings


def spread(table: pa.Table, n: int | None) -> pa.Table:
    """About n rows of requests evenly spaced over the table (all of it when n is None or
    larger), in its order: a sample of a day's examples that spans the day, so its sequence
    lengths are the day's (histories grow through the day) and its newest rows are still the last
    ones. A request's rows (adjacent, with one request_id) are kept together, as training runs
    them (training.train.batches); a table without request_id is sampled by row."""
    from training.features import request_index
    from training.text import ranges

    if n is None or n >= table.num_rows:
        return table
    request = request_index(table)
    starts = np.flatnonzero(np.diff(request, prepend=-1))  # each request's first row
    ends = np.append(starts[1:], table.num_rows)
    keep = np.linspace(0, len(starts) - 1, round(n * len(starts) / table.num_rows))
    keep = np.unique(keep.astype(np.int64))
    return table.take(ranges(starts[keep], ends[keep] - starts[keep]))


@contextmanager
def probes(spec: dict[str, tuple[object, str, Callable | None]]) -> Iterator[dict[str, dict]]:
    """Wraps owner.attr for each name -> (owner, attr, count) while the block runs; yields per
    name the seconds spent in it, its calls and `count(args, result)` summed (rows handled)."""
    figures = {name: {"s": 0.0, "calls": 0, "n": 0} for name in spec}
    originals = []
    for name, (owner, attr, count) in spec.items():
        original = getattr(owner, attr)

        def timed(*args, _original=original, _f=figures[name], _count=count, **kwargs):
            tick = time.perf_counter()
            result = _original(*args, **kwargs)
            _f["s"] += time.perf_counter() - tick
            _f["calls"] += 1
            _f["n"] += _count(args, result) if _count else 0
            return result

        setattr(owner, attr, timed)
        originals.append((owner, attr, original))
    try:
        yield figures
    finally:
        for owner, attr, original in reversed(originals):
            setattr(owner, attr, original)


def generate_day(landing, ds: str, start: str, profile: str, seed: int) -> dict:
    from ebr.synthetic import PROFILES, day_parts, write_day

    events, items = day_parts(
        date.fromisoformat(ds), date.fromisoformat(start), PROFILES[profile], seed
    )
    counted = []  # batches pass through to the writer; only their sizes are kept

    def count(batches):
        for batch in batches:
            counted.append(batch.num_rows)
            yield batch

    write_day(landing, date.fromisoformat(ds), count(events), items)
    return {"events": sum(counted), "items": items.num_rows}


def check_landing(ds: str, settings: Settings) -> dict:
    return {"rows": stages.check_landing(ds, settings)["rows"]}


def transform(ds: str, settings: Settings) -> dict:
    stages.transform(ds, settings)
    return {}


def transform_days(days: list[str], settings: Settings) -> dict:
    """The dbt build of several days in one dbt process (as the evaluation harness builds a log)."""
    from ebr.transform import dbt_build_days

    dbt_build_days(days, settings)
    return {}


def check_marts(ds: str, settings: Settings) -> dict:
    return {"rows": stages.check_marts(ds, settings)["rows"]}


def train(ds: str, settings: Settings, sample: int | None) -> dict:
    """The train stage; with `sample`, on that many of the day's training examples, spread over
    the day (the day's read is still whole and timed), and the parent's held-out rows of the
    same sample of its day and the same share of its evening. Returns the new version and its
    training metrics."""
    from training import train as training
    from training.artifact import load_meta

    read, read_evening, seen = training._read_examples, training._read_evening, {}

    def bounded(warehouse, day):
        examples = read(warehouse, day)
        seen[day] = examples.num_rows
        return spread(examples, sample)

    def bounded_evening(warehouse, day):  # the share of it that the sample is of its day
        evening = read_evening(warehouse, day)
        share = 1.0 if sample is None else min(1.0, sample / max(seen[day], 1))
        return spread(evening, round(evening.num_rows * share))

    training._read_examples, training._read_evening = bounded, bounded_evening
    try:
        with probes(
            {"read": (training, "_read_day", None), "fit": (training, "train", None)}
        ) as timed:
            version = stages.train(ds, settings)
    finally:
        training._read_examples, training._read_evening = read, read_evening
    meta = load_meta(settings.models / f"v{version}")
    assert meta is not None, f"stages.train returned v{version} without saving it"
    metrics = meta["metrics"]
    return {
        "version": version,
        "probes": timed,
        "examples_total": seen[ds],
        "sample": sample,
        **{
            k: metrics[k]
            for k in (
                "examples",
                "epochs",
                "examples_per_s",
                "rows_per_s",
                "title_queries",
                "seconds",
                "params",
                "best_epoch",
                "precision",
                "carried_examples",
            )
        },
    }


def build_index(ds: str, version: int, settings: Settings) -> dict:
    from indexing import store
    from training.artifact import Artifact

    with probes(
        {
            "encode": (Artifact, "encode_items", lambda args, result: len(result)),
            "insert": (store, "insert", lambda args, result: len(args[3])),
            "index": (store, "finish", None),  # flush, HNSW build, load
        }
    ) as timed:
        name = stages.build_index(ds, version, settings)
    return {"collection": name, "probes": timed}


def gate(ds: str, version: int, settings: Settings) -> dict:
    from indexing import exact, store
    from training.artifact import Artifact

    with probes(
        {
            "encode": (Artifact, "encode_requests", lambda args, result: len(result)),
            "encode_items": (Artifact, "encode_items", lambda args, result: len(result)),
            "exact": (exact, "top_k", lambda args, result: len(result[0])),
            "search": (store, "search_ids", lambda args, result: len(result)),
        }
    ) as timed:
        report = stages.gate(ds, version, settings)
    keep = (
        "eval_requests",
        "passed",
        "reasons",
        "candidate_recall",
        "live_recall",
        "gate_k",
        "index_agreement",
    )
    return {"probes": timed, **{k: report[k] for k in keep}}


def promote(ds: str, settings: Settings, run_id: str) -> dict:
    """Promotion and its canary; a refused gate or a failed canary is an outcome, not an error."""
    from indexing.canary import CanaryFailed
    from indexing.promote import GateRefused

    try:
        entry = stages.promote(ds, settings, run_id)
    except (GateRefused, CanaryFailed) as refused:
        return {"promoted": False, "reason": str(refused)}
    canary = (entry or {}).get("canary") or {}
    return {"promoted": entry is not None, "canary_requests": canary.get("requests", 0)}


def clean(settings: Settings) -> dict:
    return {"dropped": stages.clean(settings)}
