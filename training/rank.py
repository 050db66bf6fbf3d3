"""A training rank after the first: `python -m training.rank STORE SIZE JOB RANK`, started by
training.workers.started; it trains its share of the job's batches and saves nothing."""

from __future__ import annotations

import os
import sys

import torch

from .train import _rank
from .workers import loaded

if __name__ == "__main__":
    path, size, job, rank = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    args = torch.load(job, weights_only=False)  # written by rank 0 a moment ago
    loaded(path, rank, size)
    _rank(path, rank, size, *args)
    sys.stdout.flush()
    sys.stderr.flush()
    # Done: skip the interpreter's teardown, where a thread gloo left joinable once aborted a
    # rank ("terminate called without an active exception", 1 exit in about 100).
    os._exit(0)
