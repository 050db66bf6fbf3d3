"""One measured step in a fresh process: wall time, the step's own time, and peak memory.

A new interpreter per step is how Airflow runs a task, so wall time includes the start-up
and imports a task pays, and the step's memory is its own rather than what earlier steps left in
the heap. Peak memory is the larger of
- the kernel's high-water RSS (getrusage ru_maxrss) of the step's process and of its largest
  waited-for child (dbt runs as one), exact but per process, and
- the sum of RSS over the step's process tree, sampled every SAMPLE_S, which catches processes
  alive at the same time but can miss a spike shorter than the interval.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

SAMPLE_S = 0.05
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Measured:
    result: Any
    wall_s: float  # the process, start-up and imports included
    step_s: float  # the step function alone
    cpu_s: float  # CPU time (user + system) of the process and its children
    peak_rss_mb: float
    load: float  # the machine's 1-minute load average around the step: how shared the CPU was

    def figures(self) -> dict:
        return {
            "wall_s": self.wall_s,
            "step_s": self.step_s,
            "cpu_s": self.cpu_s,
            "peak_rss_mb": self.peak_rss_mb,
            "load": self.load,
        }


class StepFailed(RuntimeError):
    pass


def run(target: str, *args, log: Path | None = None) -> Measured:
    """Runs `target` ("module:function") with args in a new interpreter; args and result pickle.
    The child's log records go to `log` (INFO), else only warnings to stderr."""
    with tempfile.TemporaryDirectory(prefix="ebr-bench-") as tmp:
        call, answer = Path(tmp) / "call.pkl", Path(tmp) / "answer.pkl"
        call.write_bytes(pickle.dumps((target, args, log)))
        started, load = time.perf_counter(), os.getloadavg()[0]
        # -m from the repository root: the benchmarks package need not be installed
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.child", str(call), str(answer)], cwd=REPO
        )
        watcher = _TreeWatcher(proc.pid)
        watcher.start()
        code = proc.wait()
        wall_s = time.perf_counter() - started
        load = (load + os.getloadavg()[0]) / 2
        watcher.stop()
        if not answer.exists():  # killed (out of memory) or crashed in C
            raise StepFailed(f"{target}: the process died with exit code {code}")
        status, payload, step_s, cpu_s, own_peak_mb = pickle.loads(answer.read_bytes())
    if status != "ok":
        raise StepFailed(f"{target} failed:\n{payload}")
    return Measured(payload, wall_s, step_s, cpu_s, max(own_peak_mb, watcher.peak_mb), load)


def _child(call: Path, answer: Path) -> None:
    target, args, log = pickle.loads(call.read_bytes())
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
        logging.basicConfig(
            filename=log,
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
    try:
        module, name = target.split(":")
        fn = getattr(importlib.import_module(module), name)
        tick = time.perf_counter()
        result = fn(*args)
        step_s = time.perf_counter() - tick
        usage = [
            resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        ]
        cpu_s = sum(u.ru_utime + u.ru_stime for u in usage)
        peak_kb = max(u.ru_maxrss for u in usage)  # Linux: KiB
        answer.write_bytes(pickle.dumps(("ok", result, step_s, cpu_s, peak_kb / 1024)))
    except BaseException:  # noqa: BLE001 - everything goes back to the parent, which raises
        answer.write_bytes(pickle.dumps(("error", traceback.format_exc(), 0.0, 0.0, 0.0)))


class _TreeWatcher(threading.Thread):
    """Samples the summed RSS of a process and all its descendants."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak_mb, self._done = pid, 0.0, threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._done.is_set():
            total = 0
            try:
                for proc in [root, *root.children(recursive=True)]:
                    total += proc.memory_info().rss
            except psutil.NoSuchProcess:  # a child ended between listing and reading it
                pass
            self.peak_mb = max(self.peak_mb, total / 2**20)
            self._done.wait(SAMPLE_S)

    def stop(self) -> None:
        self._done.set()
        self.join()


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]))
