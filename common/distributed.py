"""The process group of a multi-process program (`torchrun --nproc_per_node N -m taco.train …`, or `… -m
dynamics.probe …`): which process this is, joining the group, a barrier, and leaving it without a gloo deadlock.

Shared by `taco.train` and `dynamics.shards`, so that the probe uses the trainer's workaround without loading the
trainer. Outside torchrun (one process) every function here is a no-op or returns the single-process answer.
"""

from __future__ import annotations

import dataclasses
import os
import time

import torch
import torch.distributed as dist


@dataclasses.dataclass
class DistInfo:
    """This process's global rank, the group's size, and its rank on this machine (0, 1, 0 outside torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> tuple[DistInfo, torch.device]:
    """The process group (under torchrun) and this process's device, from a device resolved by
    `common.cli.resolve_device`: under torchrun a CUDA run uses cuda:LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device.startswith("cuda")
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    else:
        info = DistInfo()
    if use_cuda:
        chosen = torch.device(f"cuda:{info.local_rank}" if world > 1 or device == "cuda" else device)
        torch.cuda.set_device(chosen)
        return info, chosen
    return info, torch.device(device)


def barrier(info: DistInfo) -> None:
    """Wait for every process of the group (nothing for one process)."""
    if info.world > 1:
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
