"""Data-parallel training under torchrun: the process group, synchronised batch norm, DDP, per-rank shards.

Every helper reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); in a plain `python -m lgseg` process
there is one rank and each helper leaves its input as it is.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, Subset

from lgseg.errors import ConfigError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def is_main() -> bool:
    """Rank 0: the one process that writes checkpoints, metrics and summaries."""
    return rank() == 0


@contextlib.contextmanager
def process_group():
    """Yield this process's device; with WORLD_SIZE > 1, inside a process group (NCCL on CUDA, else gloo)."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size() == 1:
        yield device
        return
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield device
        dist.barrier()  # leave together: a rank tearing down while rank 0 still writes its checkpoints can abort
    finally:
        dist.destroy_process_group()


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) whose gradient is summed over ranks too: every rank's loss depends on every rank's input."""

    @staticmethod
    def forward(ctx, tensor):
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of `tensor` over all processes (differentiable)."""
    return _SumOverRanks.apply(tensor) if dist.is_initialized() else tensor


def global_mean_loss(loss_sum: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """This rank's share of (sum of point losses) / (labelled points), both over all ranks, times the world
    size: DDP averages gradients over ranks, so the step is that of one process on the union of the batches."""
    return loss_sum * world_size() / sum_over_ranks(count).clamp(min=1)


class SyncBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d whose batch statistics cover the rows of all ranks, as if one process saw their union.

    Like the authors' MinkowskiSyncBatchNorm for several GPUs; unlike torch.nn.SyncBatchNorm it also runs on
    CPU (gloo). Statistics are summed in float64; the normalisation itself runs in float32.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        rows = x.float()
        sums = sum_over_ranks(torch.cat([rows.sum(0), rows.new_tensor([len(rows)])]).double())
        count = sums[-1]
        mean = (sums[:-1] / count).float()
        var = (sum_over_ranks(((rows - mean) ** 2).sum(0).double()) / count).float()
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * (count / (count - 1)).float(), self.momentum)
        out = (rows - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        return out.to(x.dtype)


def _synchronise_batch_norm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm1d:
            sync = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                 child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            setattr(module, name, sync.to(child.running_mean.device))
        else:
            _synchronise_batch_norm(child)


def parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """With several processes: batch norm synchronised over ranks (in place), wrapped in DDP; else `model`."""
    if not dist.is_initialized():
        return model
    _synchronise_batch_norm(model)
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def shard_batches(batches: list[list[int]]) -> list[list[int]]:
    """This rank's batches: every world-size-th, as many on every rank (a remainder of the epoch is left out)."""
    world = world_size()
    if len(batches) < world:
        raise ConfigError(f"train: {len(batches)} batches per epoch for {world} processes; lower train.batch_size "
                          "or train.max_points, or start fewer processes")
    return batches[rank():len(batches) // world * world:world]


def shard_dataset(dataset: Dataset) -> Subset:
    """This rank's items of `dataset`: every world-size-th (for evaluation summed with sum_over_ranks)."""
    return Subset(dataset, range(rank(), len(dataset), world_size()))
