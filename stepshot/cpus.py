"""How many processes and torch threads a CPU run uses: shared by `stepshot run` (which
sizes its children) and the trainer's `evaluate` (which sizes itself)."""
from __future__ import annotations

import os

from stepshot.errors import StepshotError


def threads_per_process(threads: int | None, procs: int = 1, cores: int | None = None) -> int:
    """--threads, else OMP_NUM_THREADS, else the cores shared among the processes.

    Always set for the children: results depend on it, and torch's default (every core in
    every process) oversubscribes a busy machine (two threads on a loaded 2-core machine
    evaluated ~20x slower than one). `cores`: this run's share of the machine (default all)."""
    if threads:
        return threads
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    return max(1, (cores or os.cpu_count() or 1) // max(1, procs))


def evaluation_split(threads: int | None, cores: int | None = None) -> tuple[int, int]:
    """(processes, threads each) for evaluating architectures on CPUs: --threads, else
    OMP_NUM_THREADS, else 1 thread per process, and as many processes as the cores hold.

    Architectures are independent, so splitting them over processes gives the same numbers
    (at equal threads) and is faster than threads in one process: on the 2-core machine 2
    processes x 1 thread evaluated 0.97 subnets/s, 1 process x 2 threads 0.62, 1 x 1 0.46
    (64 subnets of a grouped snapshot, 10,000 test images and 16 x 256 calibration each)."""
    cores = cores or os.cpu_count() or 1
    each = threads_per_process(threads, procs=cores, cores=cores)
    return max(1, cores // each), each


def checked_count(flag: str, value: int | None) -> int | None:
    """A count option (--threads, --cores, --processes) as given (None: not given); below 1
    is the user's error."""
    if value is not None and value < 1:
        raise StepshotError(f"{flag} must be at least 1, got {value}")
    return value
