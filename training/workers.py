"""Data-parallel training on several CPU processes (ModelConfig.workers): torch.distributed
over gloo, each rank one process of cfg.threads threads.

The calling process is rank 0 and starts the others (`started`, training.rank). Every rank
featurises the same rows and draws the same random numbers, so vocabularies, batches, sampled
negatives and dropouts agree without being sent; each trains its share of every batch against a
softmax pool of the whole batch's positives (`Group.whole`), and the gradients are summed before
every rank takes the same optimiser step: the ranks train the model one process trains, but for
the order of float sums. Rank 0 alone validates and returns the model.
Two processes of one thread each keep both cores busy, where two threads of one process wait at
a barrier after each of a step's thousands of small ops: on 30,000 of the medium bench's
examples, idle 2 cores, 2 processes trained 1.1x as many examples a second as one (medians of
alternating runs, 822 against 740; 1.47x while each rank's pool held only its half of the
positives; two threads had run 1.2x, ModelConfig.threads). What the ranks exchange and repeat a
step does not shrink with its rows: at batch_size 512 (256 a rank) they trained 1,047-1,185.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .optim import by_gradient


@dataclass(frozen=True)
class Group:
    """This process's place among the training ranks."""

    rank: int
    size: int

    def share(self, n: int) -> tuple[slice, float]:
        """This rank's contiguous share of a batch of n rows (a batch keeps a request's rows
        together, so a request is cut between ranks at most once, as at a batch's end), and the
        weight of its loss: the ranks' weighted gradients sum to the batch's. A batch of fewer
        rows than ranks (an epoch's last) is trained whole by each, at 1 / size."""
        if n < self.size:
            return slice(0, n), 1 / self.size
        lengths = self._lengths(n)
        start = sum(lengths[: self.rank])
        return slice(start, start + lengths[self.rank]), lengths[self.rank] / n

    def _lengths(self, n: int) -> list[int]:
        base, extra = divmod(n, self.size)
        return [base + (r < extra) for r in range(self.size)]

    def whole(self, part: torch.Tensor, n: int) -> torch.Tensor:
        """The batch's n rows from every rank's share of them (`share`), in order, on every rank;
        the gradient that reaches another rank's rows goes back to it. So each rank's softmax
        pool holds every positive of the batch, as one process's does."""
        if n < self.size:
            return part  # each rank holds the whole batch
        return _Whole.apply(part, self._lengths(n), self.rank)

    def same_start(self, model: nn.Module) -> None:
        """Every rank starts from rank 0's weights, as torch's DistributedDataParallel does."""
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, 0)

    def check_equal(self, model: nn.Module) -> None:
        """Raise unless every rank holds the same weights (each tensor's sum, compared): equal
        gradients and equal steps keep them so, and a rank that drifted would train another
        model than the one rank 0 returns."""
        sums = torch.stack([t.double().sum() for t in model.state_dict().values()])
        everyone = [torch.empty_like(sums) for _ in range(self.size)]
        dist.all_gather(everyone, sums)
        if not all(torch.equal(sums, other) for other in everyone):
            raise RuntimeError(f"training ranks hold different weights (rank {self.rank})")

    def sum_gradients(self, model: nn.Module) -> None:
        """Each parameter's gradient summed over the ranks, on every rank (each rank's loss is
        weighted by its share of the batch, so the sum is the whole batch's gradient).

        Dense gradients in one all-reduce of a flat buffer, with a flag each so that a parameter
        no rank reached keeps no gradient, as in one process (Adam skips it). The id tables'
        sparse gradients (the rows a step touched) in one all-gather of every table's rows:
        gloo's sparse all-reduce, a table at a time, took 38 ms of a 160 ms step on the medium
        day (10,000 examples, 2 ranks)."""
        tables, dense = by_gradient(model)
        self._sum_sparse(tables)
        flat = torch.cat(
            [torch.zeros(p.numel()) if p.grad is None else p.grad.reshape(-1) for p in dense]
            + [torch.tensor([float(p.grad is not None) for p in dense])]
        )
        dist.all_reduce(flat)
        reached, at = flat[-len(dense) :], 0
        for p, seen in zip(dense, reached.tolist(), strict=True):
            p.grad = flat[at : at + p.numel()].view_as(p).clone() if seen else None
            at += p.numel()

    def _sum_sparse(self, tables: list[nn.Parameter]) -> None:
        none = torch.zeros(0, dtype=torch.long)
        grads = [(none, none.float()) if p.grad is None else _rows(p.grad) for p in tables]
        counts = torch.tensor([len(rows) for rows, _ in grads])
        rows = torch.cat([rows for rows, _ in grads])
        values = torch.cat([values.reshape(-1) for _, values in grads])
        every_count = torch.stack(_gathered(counts, [len(counts)] * self.size))
        widths = torch.tensor([p[0].numel() for p in tables])
        every_rows = _gathered(rows, every_count.sum(1).tolist())
        every_values = _gathered(values, (every_count * widths).sum(1).tolist())
        # [rank][table] pieces, summed per table in rank order: the same sum on every rank.
        row_parts = [r.split(c.tolist()) for r, c in zip(every_rows, every_count, strict=True)]
        value_parts = [
            v.split((c * widths).tolist()) for v, c in zip(every_values, every_count, strict=True)
        ]
        for t, p in enumerate(tables):
            index = torch.cat([parts[t] for parts in row_parts])[None]
            value = torch.cat([parts[t] for parts in value_parts]).view(-1, *p.shape[1:])
            p.grad = torch.sparse_coo_tensor(
                index, value, p.shape, check_invariants=False
            ).coalesce()

    def total(self, value: float) -> float:
        """value summed over the ranks."""
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item())

    def from_first(self, flag: bool) -> bool:
        """Rank 0's flag on every rank (rank 0 validates: the others learn its decision)."""
        t = torch.tensor([int(flag)])
        dist.broadcast(t, 0)
        return bool(t.item())


class _Whole(torch.autograd.Function):
    """Group.whole: every rank's part, gathered in rank order; backward, the whole batch's
    gradient summed over the ranks (every rank's loss reads every row), and this rank's rows of
    it kept."""

    @staticmethod
    def forward(ctx, part: torch.Tensor, lengths: list[int], rank: int) -> torch.Tensor:
        ctx.rows = slice(sum(lengths[:rank]), sum(lengths[: rank + 1]))
        return torch.cat(_gathered(part, lengths))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rows], None, None


def _gathered(tensor: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
    """Every rank's tensor, in rank order, given each one's length (first dimension): gloo's
    all-gather takes equal shapes, so each is padded to the longest and cut back after."""
    pad = tensor.new_zeros(max(lengths) - len(tensor), *tensor.shape[1:])
    padded = torch.cat([tensor, pad]).contiguous()
    out = [torch.empty_like(padded) for _ in lengths]
    dist.all_gather(out, padded)
    return [o[:n] for o, n in zip(out, lengths, strict=True)]


def _rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A sparse gradient's distinct rows and their summed values."""
    grad = grad.coalesce()
    return grad.indices()[0], grad.values()


@contextlib.contextmanager
def started(size: int, job: tuple) -> Iterator[Group]:
    """Ranks 1..size-1 started as `python -m training.rank` processes training job (train's
    arguments, saved to a file for them); yields rank 0's Group once every rank has joined. On
    leaving, waits for them and raises if one failed; if rank 0 failed, stops them.

    Processes of their own, not multiprocessing's: its "spawn" re-imports the caller's __main__
    (a script without a main guard would train again in each rank), "fork" copies a process
    whose OpenMP threads already ran."""
    with tempfile.TemporaryDirectory(prefix="ebr-ranks-") as tmp:
        path, saved = str(Path(tmp) / "store"), str(Path(tmp) / "job.pt")
        torch.save(job, saved)
        # The caller's import path: the ranks import the same code (an evaluation of a worktree).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        command = [sys.executable, "-m", "training.rank", path, str(size), saved]
        ranks = [subprocess.Popen([*command, str(r)], env=env) for r in range(1, size)]
        ok, hook = False, sys.excepthook
        try:
            _wait_for(ranks, path, size)
            yield join(path, 0, size)
            ok = True
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
            sys.excepthook = hook  # init_process_group wraps it anew on each join
            for process in ranks:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=None if ok else 5)
                process.kill()  # no-op once it exited
            codes = [p.wait() for p in ranks]
            if ok and any(codes):
                raise RuntimeError(f"training ranks 1..{size - 1} exited {codes}: see their stderr")


def _wait_for(ranks: list[subprocess.Popen], path: str, size: int) -> None:
    """Block until every rank has loaded its job, raising as soon as one exits instead (a rank
    that never joins would leave rank 0 waiting in init_process_group)."""
    store = dist.FileStore(path, size)
    keys = [f"loaded{r}" for r in range(1, size)]
    while not store.check(keys):
        codes = [p.poll() for p in ranks]
        if any(c is not None for c in codes):
            raise RuntimeError(
                f"a training rank exited before joining (exit codes {codes}): see its stderr"
            )
        time.sleep(0.1)


def loaded(path: str, rank: int, size: int) -> None:
    """Tell rank 0 this rank has its job and is about to join."""
    dist.FileStore(path, size).set(f"loaded{rank}", "1")


def join(path: str, rank: int, size: int) -> Group:
    """Join the ranks' gloo group through a file (no port to pick or to clash)."""
    dist.init_process_group("gloo", store=dist.FileStore(path, size), rank=rank, world_size=size)
    return Group(rank, size)
