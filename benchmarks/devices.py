"""Training and corpus encoding on each torch device this machine has: the CPU at the training
stage's thread count, and the GPU when torch sees one, on the same day's examples and corpus.
The figures docs/scale-out.md quotes for moving training to a GPU come from here.

    python -m benchmarks.devices --warehouse EBR_HOME/bench/medium/warehouse.duckdb \
        --ds 2026-01-02 [--sample 30000] [--cpu-sample 5000] [--epochs 2]

Prints one line per device: examples/s (the training metric, epochs only) and corpus items/s
through the trained item tower (titles already turned into ids, in training's validation
batches), each also as a ratio to the CPU's, measured in the same run.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.steps import spread
from ebr.settings import load_settings
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = replace(load_settings().model, epochs=args.epochs)
    examples, corpus = training._read_day(args.warehouse, args.ds)
    rows = [measure(spread(examples, args.cpu_sample), corpus, cfg, "cpu")]
    if torch.cuda.is_available():
        rows.append(measure(spread(examples, args.sample), corpus, cfg, "cuda"))
    cpu = rows[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads outside training")
    for row in rows:
        name = torch.cuda.get_device_name() if row["device"] == "cuda" else "cpu"
        print(
            f"{name}: {row['examples']} examples, {row['examples_per_s']:,.0f} examples/s "
            f"({row['examples_per_s'] / cpu['examples_per_s']:.1f}x cpu), "
            f"{row['items_per_s']:,.0f} items/s encoded "
            f"({row['items_per_s'] / cpu['items_per_s']:.1f}x cpu)"
        )
    return rows


if __name__ == "__main__":
    main()
