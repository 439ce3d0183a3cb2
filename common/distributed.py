"""The process group of a multi-process program (`torchrun --nproc_per_node N -m taco.train …`, or `… -m
dynamics.probe …`): which process this is (`Place`, read by `current` from torchrun's environment), joining the
group, a barrier, and leaving it without a gloo deadlock.

Shared by `taco.train` and `dynamics.shards`, so that both programs describe a process the same way and the probe
uses the trainer's workaround without loading the trainer. Outside torchrun (one process) every function here is a
no-op or returns the single-process answer.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Place:
    """This process's place in the group: global rank and size, rank and size on this machine (0, 1, 0, 1 outside
    torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that checks the input, writes the shared files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process: the collective steps are real."""
        return self.world > 1


def current() -> Place:
    """This process's place, from the variables torchrun sets (one process of one outside torchrun)."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Place()
    return Place(rank=int(env.get("RANK", "0")), world=world, local_rank=int(env.get("LOCAL_RANK", "0")),
                 local_world=int(env.get("LOCAL_WORLD_SIZE", str(world))))


def init_distributed(device: str) -> tuple[Place, torch.device]:
    """The process group (under torchrun, with NCCL for a CUDA device and gloo otherwise) and this process's device,
    from a device resolved by `common.cli.resolve_device`: under torchrun a CUDA run uses cuda:LOCAL_RANK."""
    place = current()
    use_cuda = device.startswith("cuda")
    if place.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if place.distributed:  # the group's own numbering (torchrun's RANK and WORLD_SIZE under env:// rendezvous)
        place = Place(dist.get_rank(), dist.get_world_size(), place.local_rank, place.local_world)
    if use_cuda:
        chosen = torch.device(f"cuda:{place.local_rank}" if place.distributed or device == "cuda" else device)
        torch.cuda.set_device(chosen)
        return place, chosen
    return place, torch.device(device)


def barrier(place: Place) -> None:
    """Wait for every process of the group (nothing for one process)."""
    if place.distributed:
        dist.barrier()


def shutdown_distributed() -> None:
    """Leave the process group without tripping a teardown deadlock in torch's gloo backend.

    ProcessGroupGloo's destructor joins its worker threads while holding the GIL; a worker still freeing the
    last collective's tensors needs the GIL too, so a group destroyed a few microseconds after its last
    collective can hang for ever (seen at the end of a 2-process CPU run). A final barrier whose handle we
    keep, then a pause that releases the GIL, lets the workers finish before the group goes.
    """
    if not dist.is_initialized():
        return
    work = dist.barrier(async_op=True)
    work.wait()
    time.sleep(0.2)
    dist.destroy_process_group()
    del work
