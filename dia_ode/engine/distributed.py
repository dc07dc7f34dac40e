"""Data-parallel training under torchrun: the process group from torchrun's environment, in a few lines.

`torchrun --nproc_per_node N -m dia_ode train ...` starts N processes with RANK, LOCAL_RANK and
WORLD_SIZE set; each joins one process group (NCCL on CUDA, gloo on CPU), wraps the model in
DistributedDataParallel, computes its part of every global batch, and only rank 0 writes the run
directory. Without torchrun's environment everything here is a no-op for one process.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn

from dia_ode.engine.device import resolve_device


@dataclass
class DistContext:
    """Rank, world size and device of this process; methods that are identities for one process."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and prints."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world_size

    def all_reduce_sums(self, sums: dict[str, float]) -> dict[str, float]:
        """Add a dict of numbers over all ranks (float64, so counts stay exact)."""
        if not self.enabled:
            return dict(sums)
        keys = sorted(sums)  # the same order on every rank, whatever order each built its dict in
        t = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=self.device)
        torch_dist.all_reduce(t)
        reduced = dict(zip(keys, t.tolist()))
        return {k: reduced[k] for k in sums}  # the caller's order: log lines read as in one process

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank ([obj] for one process)."""
        if not self.enabled:
            return [obj]
        box: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(box, obj)
        return box

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (e.g. the run directory it created)."""
        if not self.enabled:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank."""
        if self.enabled:
            for buffer in model.buffers():
                torch_dist.broadcast(buffer, src=0)

    def wrap(self, model: nn.Module, sync_bn: bool = False) -> nn.Module:
        """DistributedDataParallel around the model (SyncBatchNorm first with sync_bn, CUDA only); itself for
        one process, where sync_bn changes nothing."""
        if not self.enabled:
            return model
        if sync_bn:
            if self.device.type != "cuda":
                raise ValueError("SyncBatchNorm runs on CUDA devices only (torch's rule)")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place: the optimizer's parameters stay
        ids = [self.device.index] if self.device.type == "cuda" else None
        # A conv on a 1-channel input (digits, Fashion-MNIST) has a weight dimension of size 1, whose
        # stride autograd chooses freely; DDP then warns once per rank that the grad's strides differ
        # from its bucket's, which for a size-1 dimension changes nothing. Only that message is silenced.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        """Leave the process group together: a rank that tore down its connections while rank 0 was
        still writing the run directory could make gloo abort the other process."""
        if self.enabled and torch_dist.is_initialized():
            torch_dist.barrier()
            torch_dist.destroy_process_group()


def from_environment(device: str = "auto") -> DistContext:
    """The context of this process: joins torchrun's process group when WORLD_SIZE > 1.

    Args:
        device: "auto", "cpu" or "cuda"; with CUDA each rank takes the GPU of its LOCAL_RANK.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_device(device)
    if world == 1:
        return DistContext(resolved)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if resolved.type == "cuda":
        # every rank checks (rank 0 is the one that speaks): NCCL refuses two ranks on one GPU, deep inside
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
        if local_world > torch.cuda.device_count():
            raise ValueError(f"torchrun started {local_world} processes on this machine, but it has "
                             f"{torch.cuda.device_count()} GPU(s): one process per GPU (--nproc_per_node), "
                             "or --device cpu for gloo")
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return DistContext(resolved, rank, world, local_rank)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel (what checkpoints and analysis see)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
