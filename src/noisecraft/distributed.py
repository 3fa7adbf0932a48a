"""Process-group plumbing for data-parallel training, and CPU thread settings.

`torchrun --nproc_per_node=N -m noisecraft train ...` starts N processes with RANK / WORLD_SIZE / LOCAL_RANK in
their environment; `setup` joins them into one process group (NCCL on GPUs, gloo on CPU), one GPU per process.
Each rank trains on its slice of every global batch (see `data.DeviceBatcher`) and DDP averages the gradients,
so N processes follow the trajectory of one process with the same global batch. A plain `python -m noisecraft`
run is rank 0 of a world of 1 and never touches torch.distributed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from noisecraft.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    initialized_here: bool = False  # we own the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name} must be an integer, got {value!r}") from None


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group if there is one; returns this rank's info and its device."""
    world = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    if world <= 1:
        return DistInfo(), device
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    initialized_here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kwargs)
        initialized_here = True
    return DistInfo(rank, world, local_rank, local_world, initialized_here), device


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of `t` over ranks (in place); a no-op for one process."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= info.world_size
    return t


def teardown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def configure_cpu_threads(requested: int, info: DistInfo) -> int:
    """Intra-op threads for CPU training. `requested` > 0 wins. Otherwise a single process keeps what it has
    (torch's default of one per physical core, or what OMP_NUM_THREADS / the caller set), and N processes on
    one machine share its usable cores evenly, unless OMP_NUM_THREADS says otherwise: oversubscribed cores
    make every rank slower."""
    if requested > 0:
        torch.set_num_threads(requested)
    elif info.local_world_size > 1 and not os.environ.get("OMP_NUM_THREADS"):
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // info.local_world_size))
    return torch.get_num_threads()
