"""Several processes, one run (``torchrun``): which process this is, the process group, and the few
collectives the one training loop needs. Without torchrun a run is one process and every helper
here does nothing. Importable alone (torch only; ``diffnb.models.resnet`` is imported on CUDA, when needed).

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT in every process it starts
(PyTorch docs, "torchrun (Elastic Launch)"). Each process draws the whole global batch from the
epoch's generator, as one process would, and trains on its contiguous shard of it
(:func:`shard`); DistributedDataParallel averages the gradients (:func:`wrap`), so every process
takes the step one process would take on the whole batch.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
LAUNCH = "torchrun --standalone --nproc_per_node=N -m diffnb.training PRESET"
CPU_BATCHNORM = ("SyncBatchNorm runs on CUDA only (torch {}: 'SyncBatchNorm expected input tensor to "
                 "be on GPU'); on the CPU each of the {} processes normalises its own share of the "
                 "global batch, so this BatchNorm net's run differs from a one-process run at the "
                 "same global batch (GroupNorm nets, the UNet, do not).")


@dataclass(frozen=True)
class World:
    """This process's place among ``size`` processes; rank 0 writes the checkpoints."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env(env=None) -> World:
    """The processes torchrun started, read from its environment (one process without it)."""
    env = os.environ if env is None else env
    present = [k for k in TORCHRUN_ENV if k in env]
    if not present:
        return World()
    missing = [k for k in TORCHRUN_ENV if k not in env]
    if missing:
        raise ValueError(f"torchrun's environment is half set: {', '.join(present)} set but "
                         f"{', '.join(missing)} not. Launch several processes with `{LAUNCH}`, or "
                         f"unset {', '.join(present)} to train in one process.")
    try:
        rank, local_rank, size = (int(env[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    except ValueError:
        raise ValueError(f"RANK, LOCAL_RANK and WORLD_SIZE must be integers, got "
                         f"{[env[k] for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE')]}; launch with "
                         f"`{LAUNCH}`.") from None
    if not (0 <= local_rank <= rank < size):
        raise ValueError(f"RANK={rank}, LOCAL_RANK={local_rank}, WORLD_SIZE={size} do not fit "
                         f"together (0 <= LOCAL_RANK <= RANK < WORLD_SIZE); launch with `{LAUNCH}`.")
    return World(rank, local_rank, size)


def world() -> World:
    """This process's place: from the process group once :func:`init` joined it, else one process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size())
    return World()


def init(device: torch.device) -> World:
    """Join torchrun's process group: nccl on CUDA, gloo on the CPU. One process: nothing."""
    w = from_env()
    if w.size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return w


def destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_batch(batch_size: int, size: int) -> int:
    """The images per process of a global batch, which must split evenly."""
    if batch_size % size:
        lower, upper = batch_size - batch_size % size, batch_size - batch_size % size + size
        raise ValueError(f"the global batch of {batch_size} images does not split evenly over "
                         f"{size} processes: use a batch divisible by {size} (e.g. {lower or upper} "
                         f"or {upper}: --set train.batch_size=...) or a number of processes that "
                         f"divides {batch_size}.")
    return batch_size // size


def shard(w: World, *tensors):
    """This process's contiguous share [rank b, (rank + 1) b) of each global-batch tensor (None
    stays None); in one process the tensors themselves."""
    if w.size == 1:
        return tensors
    b = check_batch(len(tensors[0]), w.size)
    return tuple(None if t is None else t[w.rank * b:(w.rank + 1) * b] for t in tensors)


def barrier() -> None:
    if world().size > 1:
        dist.barrier()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
        else torch.device("cpu")


def mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over the processes (an all-reduce; ``t`` itself in one process)."""
    if world().size == 1:
        return t
    out = t.detach().clone()
    dist.all_reduce(out)
    return out / world().size


def any_rank(flag: bool) -> bool:
    """True on every process if it is True on one (decisions that must agree, e.g. a deadline)."""
    if world().size == 1:
        return flag
    t = torch.tensor(int(flag), device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_buffers(*modules: nn.Module | None) -> None:
    """Rank 0's buffers (BatchNorm statistics) in every process: all ranks hold the same model."""
    if world().size == 1:
        return
    for m in modules:
        for b in ([] if m is None else m.buffers()):
            dist.broadcast(b, src=0)


class _Method(nn.Module):
    """``module.<name>`` as a forward: DDP averages the gradients of what its forward computed."""

    def __init__(self, module: nn.Module, name: str):
        super().__init__()
        self.module, self.name = module, name

    def forward(self, *args, **kwargs):
        return getattr(self.module, self.name)(*args, **kwargs)


def wrap(module: nn.Module, name: str, *, device: torch.device):
    """``module.<name>`` (e.g. the denoiser's loss) for one training step: in one process the
    method itself; under torchrun through DistributedDataParallel, its BatchNorm layers made
    SyncBatchNorm on CUDA. ``module`` is changed in place: its parameters stay the optimizer's."""
    w = world()
    if w.size == 1:
        return getattr(module, name)
    if device.type == "cuda":
        from diffnb.models import resnet

        resnet.sync_batchnorm(module)
    elif w.main and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        warnings.warn(CPU_BATCHNORM.format(torch.__version__, w.size), stacklevel=2)
    return nn.parallel.DistributedDataParallel(
        _Method(module, name), device_ids=[device.index] if device.type == "cuda" else None)
