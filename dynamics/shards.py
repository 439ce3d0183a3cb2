"""Several probe processes: `torchrun --nproc_per_node N -m dynamics.probe DIR …`.

Which process this is (`common.distributed.Place`, read by `current` from torchrun's environment; re-exported
here), where it measures (`device`: cuda:LOCAL_RANK for a CUDA device, else the device asked for, with cores / N
torch threads on the CPU), which snapshots are its share (`share`: round robin over the work to do), and the few
collective steps that keep the processes in step:
`together` (run a step on every process; when any fails, all stop at the same point), `from_main` (rank 0's value
on every process) and `gather` (every process's value on every process).

Why every step goes through `together`: a process that raised and left would leave the others waiting at their next
collective for ever. So each step's outcome is exchanged before anyone moves on; the first failing process raises
its own error (bad input: one `error:` line, exit status 2), and the others raise `PeerFailed` and exit with the same
status quietly. Outside torchrun (one process) every function here is a pass-through.

The group uses gloo whatever the measuring device: only a few small Python objects cross it (verdicts, the plan,
what each process computed), so CUDA runs need no NCCL communicator on the GPUs that measure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from common.distributed import Place, current, shutdown_distributed
from common.errors import UsageError
from dynamics.errors import ProbeError

__all__ = ["Place", "PeerFailed", "cpu_threads", "current", "device", "exit_code", "from_main", "gather", "group",
           "settle", "share", "together"]

T = TypeVar("T")


class PeerFailed(Exception):
    """Another process of the group failed and reports why; this one exits with the same status without a word."""

    def __init__(self, rank: int, exit_code: int) -> None:
        super().__init__(f"process {rank} of the probe group failed (exit status {exit_code})")
        self.rank = rank
        self.exit_code = exit_code


def exit_code(error: BaseException) -> int:
    """The exit status `error` gives: 2 for bad input (`UsageError`), 1 for anything else."""
    return UsageError.exit_code if isinstance(error, UsageError) else 1


@contextmanager
def group(shard: Place) -> Iterator[None]:
    """The process group for the duration (nothing outside torchrun, or when one is already set up).

    Left with `common.distributed.shutdown_distributed` (its final barrier works around a gloo teardown deadlock) on
    success and on an error raised by `together` — which every process raises at the same step, so all of them
    reach that barrier. Not after Ctrl-C: the other processes are interrupted too, wherever they are, and a barrier
    could wait for ever."""
    if not shard.distributed or dist.is_initialized():
        yield
        return
    dist.init_process_group(backend="gloo")
    try:
        yield
    except Exception:
        shutdown_distributed()
        raise
    shutdown_distributed()


def settle(shard: Place, error: BaseException | None) -> None:
    """Exchange how this step went on every process; when any failed, raise on every process.

    The first failing process raises its own `error`; the others raise `PeerFailed`, except that a failing process
    whose error is not bad input raises its own too (its traceback is worth seeing). One process: raise `error`."""
    if not shard.distributed:
        if error is not None:
            raise error
        return
    codes: list[Any] = [None] * shard.world
    dist.all_gather_object(codes, None if error is None else exit_code(error))
    failed = [rank for rank, code in enumerate(codes) if code is not None]
    if not failed:
        return
    if error is not None and (shard.rank == failed[0] or not isinstance(error, UsageError)):
        raise error
    raise PeerFailed(failed[0], int(codes[failed[0]]))


def together(shard: Place, work: Callable[[], T]) -> T:
    """`work()` on this process, then `settle`: its value once every process has done its part of the step."""
    try:
        value = work()
    except Exception as exc:
        settle(shard, exc)
        raise  # not reached: settle raises exc here
    settle(shard, None)
    return value


def from_main(shard: Place, value: T | None) -> T:
    """Rank 0's `value` on every process (pickled across the group); the others pass None."""
    if not shard.distributed:
        return value  # type: ignore[return-value]
    box = [value if shard.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(shard: Place, value: T) -> list[T]:
    """Every process's `value`, in rank order, on every process."""
    if not shard.distributed:
        return [value]
    out: list[Any] = [None] * shard.world
    dist.all_gather_object(out, value)
    return out


def share(items: Sequence[T], shard: Place) -> list[T]:
    """This process's share of `items`: every world-th item from its rank on. Round robin in order, so that the
    split is the same on every process and consecutive snapshots (of similar cost) go to different processes."""
    return list(items[shard.rank::shard.world])


def cpu_threads(local_world: int) -> int:
    """Torch threads for each of `local_world` processes sharing this machine's CPUs: cores / N, at least 1. The
    cores are those this process may run on (a taskset or container limit counts). torchrun's own default is 1
    thread per process (`OMP_NUM_THREADS=1`), which leaves most of a large machine idle."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_world))


def device(shard: Place, resolved: str) -> str:
    """Where this process measures, given the resolved `--device`: under torchrun a CUDA device means
    cuda:LOCAL_RANK (made the current device), and the CPU gets `cpu_threads` torch threads; otherwise `resolved`.
    `ProbeError` when this machine has fewer CUDA devices than processes."""
    if not shard.distributed:
        return resolved
    if resolved.startswith("cuda"):
        visible = torch.cuda.device_count()
        if shard.local_rank >= visible:
            raise ProbeError(f"--device {resolved}: torchrun started {shard.local_world} processes on this machine "
                             f"but {visible} CUDA device(s) are visible; use --nproc_per_node {visible} or fewer")
        torch.cuda.set_device(shard.local_rank)
        return f"cuda:{shard.local_rank}"
    if resolved == "cpu":
        torch.set_num_threads(cpu_threads(shard.local_world))
    return resolved
