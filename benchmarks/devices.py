"""Training, corpus encoding and the gate's exact search on each torch device this machine has:
the CPU (training at the stage's thread count) and the GPU when torch sees one, on the same
day's examples and corpus. The figures docs/scale-out.md quotes for a GPU come from here.

    python -m benchmarks.devices --warehouse EBR_HOME/bench/medium/warehouse.duckdb \
        --ds 2026-01-02 [--sample 30000] [--cpu-sample 5000] [--epochs 2] \
        [--search-queries 10000] [--search-items 1000000]

Prints one line per device: examples/s (the training metric, epochs only) and corpus items/s
through the trained item tower (titles already turned into ids, in training's validation
batches), and the seconds of indexing.exact.top_k (the recall gate's search) over random vectors
of the model's width at the gate's K; each also as a ratio to the CPU's, measured in the same run.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.steps import spread
from ebr.settings import load_settings
from indexing import exact
from training import features
from training import train as training


def measure(examples, corpus, cfg, device: str) -> dict:
    """One from-scratch training run on device (no validation: its time is not training's) and
    one encoding of the whole corpus by the trained item tower there."""
    empty = examples.slice(0, 0)
    artifact = training.train(examples, corpus, cfg, validation=empty, device=device)
    model = artifact.model.to(device)
    items = features.items(corpus, artifact.vocabs, cfg, grow=False)
    with torch.no_grad():
        training._encode_items(model, items, device)  # warm-up: kernels, allocator
        _sync(device)
        tick = time.perf_counter()
        training._encode_items(model, items, device)
        _sync(device)
        seconds = time.perf_counter() - tick
    return {
        "device": device,
        "examples": artifact.meta["metrics"]["examples"],
        "examples_per_s": artifact.meta["metrics"]["examples_per_s"],
        "items_per_s": len(items) / seconds,
    }


def search(queries: int, items: int, dim: int, k: int, device: str) -> float:
    """Seconds of the gate's exact top-k of `queries` random vectors over `items` on device."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((queries, dim), dtype=np.float32)
    vecs = rng.standard_normal((items, dim), dtype=np.float32)
    exact.top_k(q[:1], vecs, k, device)  # warm-up
    tick = time.perf_counter()
    exact.top_k(q, vecs, k, device)
    return time.perf_counter() - tick


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", type=Path, required=True)
    parser.add_argument("--ds", required=True)
    parser.add_argument("--sample", type=int, default=30_000, help="examples on a GPU")
    parser.add_argument("--cpu-sample", type=int, default=5_000, help="examples on the CPU")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--search-queries", type=int, default=10_000, help="the gate's sample")
    parser.add_argument("--search-items", type=int, default=1_000_000, help="a large corpus")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = load_settings()
    cfg = replace(settings.model, epochs=args.epochs)
    k = max((*settings.recall_ks, settings.gate_k))  # what the gate searches for
    examples, corpus = training._read_day(args.warehouse, args.ds)
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    rows = []
    for device in devices:
        sample = args.cpu_sample if device == "cpu" else args.sample
        row = measure(spread(examples, sample), corpus, cfg, device)
        row["search_s"] = search(args.search_queries, args.search_items, cfg.dim, k, device)
        rows.append(row)
    cpu = rows[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads outside training")
    for row in rows:
        name = torch.cuda.get_device_name() if row["device"] == "cuda" else "cpu"
        print(
            f"{name}: {row['examples']} examples, {row['examples_per_s']:,.0f} examples/s "
            f"({row['examples_per_s'] / cpu['examples_per_s']:.1f}x cpu), "
            f"{row['items_per_s']:,.0f} items/s encoded "
            f"({row['items_per_s'] / cpu['items_per_s']:.1f}x cpu), exact top-{k} of "
            f"{args.search_queries:,} queries over {args.search_items:,} items in "
            f"{row['search_s']:.2f} s ({cpu['search_s'] / row['search_s']:.1f}x cpu)"
        )
    return rows


if __name__ == "__main__":
    main()
