"""Independent pieces of CPU work on worker threads with one torch thread each: the probe's forward batches
(`dynamics.measure.extract`) and its per-layer metric tasks (`dynamics.measure.families`).

On a few cores this beats splitting every operation over torch's intra-op threads: the small and
memory-bound operations (LayerNorm, GELU, softmax, index copies) then run side by side instead of each being
cut T ways with a barrier after it, and nothing spin-waits against a busy machine's other work the way OpenMP
workers do. Measured on 2 cores: a `mini` snapshot's extraction takes 0.95× the time (median of 20 paired
snapshots, 0.78–1.16 on a noisy machine), the metric tasks are 15–20 % faster. Each piece runs on one thread
whichever worker takes it, so its result does not depend on the schedule or on the number of workers (a
T-threaded product may round differently from a one-threaded one).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from dynamics.metrics.blas import numpy_blas, single_thread

T = TypeVar("T")
R = TypeVar("R")


def cpu_workers(device: str | torch.device) -> int:
    """How many worker threads for `device`: torch's intra-op thread count on the CPU, else 1 (a GPU runs one
    piece at a time)."""
    return max(1, torch.get_num_threads()) if torch.device(device).type == "cpu" else 1


def map_on_threads(fn: Callable[[T], R], items: Iterable[T], workers: int, *, numpy: bool = False,
                   name: str = "probe") -> list[R]:
    """[fn(item) for item in items], in order; with `workers` ≥ 2, on that many threads with one torch thread
    each (the caller's thread count is restored afterwards); `numpy`: their products through numpy's single-threaded
    BLAS as well (`numpy_blas`). With 1 worker: in this thread, as torch is set up."""
    if workers <= 1:
        return [fn(item) for item in items]

    def one(item: T) -> R:
        torch.set_num_threads(1)  # this thread's OpenMP and MKL settings (MKL's are per thread)
        return fn(item)

    with single_thread(), numpy_blas() if numpy else contextlib.nullcontext(), \
            ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        return list(pool.map(one, items))
