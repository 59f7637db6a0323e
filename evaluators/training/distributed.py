"""Data-parallel training across processes started by ``torchrun`` (one process per device).

``torchrun --nproc_per_node=N -m search train ...`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``;
:func:`context` then joins the process group (gloo for CPU tensors, NCCL for CUDA ones; device
``cuda:LOCAL_RANK``). ``trainer.batch_size`` stays the GLOBAL batch: every rank reads the same
global batch order and augmentation and takes its contiguous shard, and each rank's loss is weighted
by its share of the batch, so that the averaged gradient is the combined batch's whatever the
world size. Without ``WORLD_SIZE`` > 1 everything here is a no-op (world size 1, rank 0).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from evaluators.training.metrics import EvalResult
from search_spaces.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """This process's place among the training processes (``world_size`` 1: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that writes files and shows a progress bar."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """(rank, world size): which part of every global batch this process takes."""
        return self.rank, self.world_size

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.enabled:
            return value
        box: list[Any] = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[no-any-return]

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def broadcast_module(self, model: nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor, src=0)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over all ranks (float64 on the CPU)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def mean_tensor(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` averaged over all ranks (a new tensor on ``value``'s device)."""
        if not self.enabled:
            return value
        out = value.detach().clone()
        dist.all_reduce(out)
        return out / self.world_size

    def reduce_eval(self, result: EvalResult) -> EvalResult:
        """The evaluation of the whole split from each rank's evaluation of its shard."""
        if not self.enabled:
            return result
        count = result.count
        local = [result.top1 * count, result.top5 * count, result.loss * count, count] if count else [0.0] * 4
        correct1, correct5, loss_sum, total = self.sum(local)
        if total == 0:
            return EvalResult(math.nan, math.nan, math.nan, 0)
        return EvalResult(round(correct1) / total, round(correct5) / total, loss_sum / total, round(total))

    def average_gradients(self, model: nn.Module) -> None:
        """Mean of every gradient over the ranks, in one flat all-reduce (what DDP does, by hand: the
        supernet's sandwich runs several sub-networks through ``forward_spec`` before one step).
        Every rank trains the same sub-networks, so the same parameters have gradients everywhere."""
        if self.enabled:
            self._mean_in_place([p.grad for p in model.parameters() if p.grad is not None])

    def average_buffers(self, model: nn.Module) -> None:
        """Mean of the floating-point buffers (batch-norm running statistics) over the ranks, so that
        every rank holds the same model: the running means are then exactly the combined batch's
        (the update is linear in the batch mean), the running variances the mean of the shards'."""
        if self.enabled:
            self._mean_in_place([b for b in model.buffers() if b.is_floating_point()])

    def _mean_in_place(self, tensors: list[torch.Tensor]) -> None:
        """Replace each of ``tensors`` by its mean over the ranks, in one flat all-reduce."""
        if not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for tensor in tensors:
            tensor.copy_(flat[offset:offset + tensor.numel()].view_as(tensor))
            offset += tensor.numel()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r}: must be an integer "
                          "(set by torchrun)") from None


def context() -> DistContext:
    """This process's :class:`DistContext`, joining torchrun's process group on the first call.

    The group uses gloo for CPU tensors and NCCL for CUDA tensors when CUDA and NCCL are there."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 (torchrun) but this torch build has no torch.distributed")
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and dist.is_nccl_available()
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo")
        if rank != 0:  # rank 0 logs for all
            logging.getLogger().setLevel(logging.WARNING)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank)


def resolve_device(name: str, ctx: DistContext) -> torch.device | None:
    """The device of this rank (``cuda:LOCAL_RANK`` for ``auto``/``cuda``) when distributed, else None
    (the caller resolves ``name`` as usual)."""
    if not ctx.enabled:
        return None
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name not in ("auto", "cuda"):
        raise ConfigError(f"trainer.device: {name!r} names one GPU, but torchrun started {ctx.world_size} "
                          "processes; use auto or cuda (rank r trains on cuda:LOCAL_RANK) or cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"trainer.device: {name!r} asked for, but CUDA is not available; use auto or cpu")
    return torch.device("cuda", ctx.local_rank)


def shared_run_dir(path: Path) -> Path:
    """Rank 0's run dir on every rank (Hydra's timestamped dir may differ by a second between ranks)."""
    return context().broadcast(path)


def check_sync_bn(sync_bn: bool, device: torch.device, ctx: DistContext) -> bool:
    """Whether to convert batch norms to ``SyncBatchNorm``: asked for, distributed and on CUDA
    (torch has no CPU implementation: a ConfigError there)."""
    if not sync_bn or not ctx.enabled:
        return False
    if device.type != "cuda":
        raise ConfigError("trainer.sync_bn: SyncBatchNorm runs on CUDA only (torch has no CPU version); "
                          "set trainer.sync_bn=false for CPU processes")
    return True


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in :class:`DistributedDataParallel`, without the per-forward broadcast of rank 0's
    buffers: the trainer averages them after every step (:meth:`DistContext.average_buffers`)."""
    ids = [device.index] if device.type == "cuda" else None
    parameters = inspect.signature(DistributedDataParallel.__init__).parameters
    key = "forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers"
    options: dict[str, Any] = {key: False}
    return DistributedDataParallel(model, device_ids=ids, **options)
