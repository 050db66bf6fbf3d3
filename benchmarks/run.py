"""One profile's benchmark: generate its days into EBR_HOME/bench/<profile>/, run every stage of
every day in its own process, then the baselines; returns the figures report.py reads."""

from __future__ import annotations

import os
import platform
import shutil
import time
from dataclasses import asdict, replace
from datetime import date, timedelta

import psutil
import pyarrow.parquet as pq

from ebr.settings import Settings
from ebr.synthetic import PROFILES
from ebr.warehouse import reading

from . import child

# Training a large day in full would take hours on 2 cores: by default it trains on the day's
# first examples only, and the report gives the rate and the extrapolated full-day time.
TRAIN_SAMPLE = {"large": 100_000}
DEFAULT_PROFILES = ("small", "medium", "large")
ANN_QUERIES = 1000  # requests for ANN against exact search
ENCODE_SAMPLE = 50_000  # corpus rows for the encoder's split into Python and matrix work
LENGTH_SAMPLE = 20_000  # training examples the padded sequence lengths are measured on
LATENCY = {"single": 200, "batch": 64, "batches": 30, "k": 50}
STAGES = (
    "check_landing",
    "transform",
    "check_marts",
    "train",
    "build_index",
    "gate",
    "promote",
    "clean",
)


def bench_settings(settings: Settings, profile: str) -> Settings:
    """A home of its own, with its own Milvus Lite file: never what serves."""
    home = settings.home / "bench" / profile
    return replace(settings, home=home, milvus_uri=str(home / "milvus.db"))


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        **cpu(),
        "memory_gib": psutil.virtual_memory().total / 2**30,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }


def cpu() -> dict:
    """The processor and the vector unit torch dispatches to: on 2 cores each, the medium day
    trained 1,361 examples/s on an AMX machine (bfloat16 matrix units) and 680 on an AVX2-only
    one, so a figure means little without them."""
    import torch

    caps = torch.cpu.get_capabilities()
    return {
        "cpu_name": caps.get("cpu_name", platform.processor()),
        "vector_unit": torch.backends.cpu.get_cpu_capability(),
        "amx_bf16": bool(caps.get("amx_bf16")),
    }


def measured_days(days: int, fast_forward: bool) -> list[int]:
    """The days (counted from 1) that run every stage: all of them, or with fast_forward the
    first two and the last, the others only landing and transformed (the history the last day's
    marts read)."""
    if fast_forward and days > 3:
        return [1, 2, days]
    return list(range(1, days + 1))


def run(
    settings: Settings,
    profile: str,
    days: int,
    train_sample: int | None = None,
    fast_forward: bool = False,
    say=print,
) -> dict:
    """Benchmarks `days` days of `profile` from an empty home (with fast_forward, only days 1, 2
    and the last run every stage: see measured_days); returns the figures."""
    s = bench_settings(settings, profile)
    shutil.rmtree(s.home, ignore_errors=True)  # day one starts from nothing, as a new deployment
    s.home.mkdir(parents=True)
    sample = train_sample or TRAIN_SAMPLE.get(profile)
    if sample:
        # A model trained on a sample is weaker than the day's would be: the gate still measures
        # (its cost is the same), but never refuses, so that promotion, the canary and serving
        # are measured on it too.
        s = replace(s, recall_floor=0.0, regression_margin=1.0)
    start = date.fromisoformat(settings.start_date)
    out: dict = {
        "profile": profile,
        "days": [],
        "machine": machine(),
        "train_sample": sample,
        "profile_settings": asdict(PROFILES[profile]),
        "model": asdict(s.model),
        "fast_forward": None,
    }
    started = time.perf_counter()
    out["matmul_before"] = child.run("benchmarks.baselines:matmul_flops", s.model.threads).result

    def step(name: str, ds: str, *args) -> child.Measured:
        """One step in its own process; its log records go to logs/<ds>.log."""
        measured = child.run(f"benchmarks.{name}", *args, log=s.home / "logs" / f"{ds}.log")
        say(
            f"  {name.split(':')[1]:<16} {measured.wall_s:7.1f} s wall {measured.step_s:7.1f} s "
            f"in step {measured.cpu_s:7.1f} s CPU {measured.peak_rss_mb:6.0f} MB peak  "
            f"load {measured.load:.1f}"
        )
        return measured

    full, skipped = measured_days(days, fast_forward), []
    for k in range(days):
        ds = (start + timedelta(days=k)).isoformat()
        say(f"{profile} day {k + 1}/{days} ({ds})" + ("" if k + 1 in full else ": landing only"))
        generated = step(
            "steps:generate_day", ds, s.landing, ds, settings.start_date, profile, s.seed
        )
        if k + 1 not in full:
            skipped.append(ds)
            continue
        if skipped:
            # The days in between get their marts (the histories this day reads), in one dbt
            # process; no model is trained on them, so this day warm-starts from day 2's.
            transformed = step("steps:transform_days", ds, skipped, s)
            out["fast_forward"] = {"days": skipped, **transformed.figures()}
            skipped = []
        figures: dict[str, dict] = {}
        for stage in STAGES:
            args = {
                "train": (ds, s, sample),
                "build_index": (ds, figures.get("train", {}).get("version"), s),
                "gate": (ds, figures.get("train", {}).get("version"), s),
                "promote": (ds, s, f"bench__{profile}__{ds}"),
                "clean": (s,),
            }.get(stage, (ds, s))
            measured = step(f"steps:{stage}", ds, *args)
            figures[stage] = {**measured.figures(), **measured.result}
        out["days"].append(
            {
                "ds": ds,
                "day": k + 1,
                "facts": _facts(s, ds),
                "generate": {**generated.figures(), **generated.result},
                "stages": figures,
            }
        )

    say(f"{profile} baselines")
    last = out["days"][-1]["ds"]
    all_days = [d["ds"] for d in out["days"]]
    baselines = {
        "ann_vs_exact": ("baselines:ann_vs_exact", (s, ANN_QUERIES)),
        "encoding": ("baselines:encoding_split", (s, ENCODE_SAMPLE)),
        "lengths": ("baselines:padded_lengths", (last, s, LENGTH_SAMPLE)),
        "scratch_training": ("baselines:scratch_training", (all_days, s, sample)),
        "latency": ("baselines:search_latency", (s, *LATENCY.values())),
    }
    out["baselines"] = {}
    for name, (target, args) in baselines.items():
        measured = step(target, last, *args)
        out["baselines"][name] = {**measured.figures(), **measured.result}
    out["matmul_after"] = child.run("benchmarks.baselines:matmul_flops", s.model.threads).result
    out["machine_after"] = machine()
    out["seconds"] = time.perf_counter() - started
    return out


def _facts(s: Settings, ds: str) -> dict:
    """The day's sizes: landed events and items, and the mart rows the stages worked on."""
    day = s.landing_day(ds)
    with reading(s.warehouse) as con:
        count = {
            table: con.execute(
                f"select count(*) from {table} where ds = cast(? as date)", [ds]
            ).fetchall()[0][0]
            for table in (
                "mart_training_examples",
                "mart_eval_examples",
                "mart_item_corpus",
                "mart_user_features",
            )
        }
    return {
        "events": pq.read_metadata(day / "events.parquet").num_rows,
        "items": pq.read_metadata(day / "items.parquet").num_rows,
        "training_examples": count["mart_training_examples"],
        "eval_requests": count["mart_eval_examples"],
        "corpus": count["mart_item_corpus"],
        "users": count["mart_user_features"],
    }
