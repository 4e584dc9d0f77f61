"""Multi-process training with PyTorch's DistributedDataParallel (DDP), launched by ``torchrun``.

Nothing here is home-made parallelism: each process trains the same networks on its own
minibatches and DDP averages the gradients, so every process holds identical weights after
every step. ``torchrun --nproc_per_node N`` sets the environment this module reads; a plain
``python`` run is a world of one process and changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class World:
    """Where this process sits among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` behind DDP (gradients averaged across processes), or as it is alone.

        DDP copies rank 0's parameters to every process here, so all start identical.
        """
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``tensor`` on every process (in place)."""
        if self.distributed:
            torch.distributed.broadcast(tensor, src=0)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


def launched_world() -> World:
    """The :class:`World` that ``torchrun`` describes in the environment (one process if none)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(
        rank=int(os.environ.get("RANK", "0")),
        size=size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def device_for(world: World, device: str) -> torch.device:
    """The device of this process: with CUDA, one GPU per process (``LOCAL_RANK``)."""
    from scld_aug._random import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cuda" and world.distributed:
        n = torch.cuda.device_count()
        if world.local_rank >= n:
            raise RuntimeError(
                f"Process {world.local_rank} on this node has no GPU of its own ({n} visible); "
                f"launch at most {n} processes per node (torchrun --nproc_per_node {n})."
            )
        resolved = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(resolved)
    return resolved


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[World]:
    """Join the process group for the duration of the block (NCCL on GPUs, gloo on CPUs)."""
    if not world.distributed or torch.distributed.is_initialized():
        yield world
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(
        backend, rank=world.rank, world_size=world.size, timeout=datetime.timedelta(minutes=30)
    )
    try:
        yield world
    finally:
        torch.distributed.destroy_process_group()
