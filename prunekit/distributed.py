"""One run over several processes (torch.distributed): who this process is, and the few
collective operations the run needs.

A run launched by `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK) or by SLURM (SLURM_PROCID /
SLURM_NTASKS / SLURM_LOCALID) with more than one process joins one process group: gloo on the
CPU, NCCL on CUDA. Every rank trains on its share of each batch (gradients averaged by
DistributedDataParallel), evaluates its share of each split (counts summed here), and takes the
same decisions; rank 0 alone writes files. `hardware.distributed=off` keeps every process on its
own, as a single process is.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist

from prunekit.errors import ConfigError

MODES = ("auto", "off")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> World:
    """The world the launcher describes in the environment (torchrun's, else SLURM's); a
    ConfigError naming the variable when it does not describe one."""
    env = os.environ
    names = (("RANK", "WORLD_SIZE", "LOCAL_RANK") if "WORLD_SIZE" in env else
             ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
             if "SLURM_NTASKS" in env and "SLURM_PROCID" in env else None)
    if names is None:
        return World()
    rank, size, local = (env_int(name, 0 if name != names[1] else None) for name in names)
    if size < 1 or not 0 <= rank < size or local < 0:
        raise ConfigError(f"{names[0]}={rank} of {names[1]}={size} is not a process of the "
                          "launch: the launcher (torchrun, SLURM) sets them; unset them for a "
                          "single process")
    return World(rank, size, local)


def env_int(name: str, default: Optional[int]) -> int:
    value = os.environ.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{name}={value} is not a whole number: the launcher (torchrun, "
                          f"SLURM) sets it; unset it for a single process") from None


def current() -> World:
    """This process's place in the running process group (a single process: rank 0 of 1)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), launched().local_rank)
    return World()


def join(mode: str = "auto", cuda: Optional[bool] = None) -> World:
    """Join the launcher's process group (once per process) when `mode` is auto and it has more
    than one process; the world this process is in."""
    if mode not in MODES:
        raise ConfigError(f"hardware.distributed={mode} is not one of {', '.join(MODES)}")
    world = launched()
    if mode == "off" or not world.distributed or current().distributed:
        return current()
    env = os.environ
    if not env.get("MASTER_ADDR") and "SLURM_JOB_ID" in env:
        export_slurm_rendezvous()
    if not env.get("MASTER_ADDR") or not env.get("MASTER_PORT"):
        raise ConfigError(f"{world.size} processes but no MASTER_ADDR / MASTER_PORT to meet at: "
                          "launch with torchrun, or export them in the SLURM script")
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda:
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if cuda else "gloo", rank=world.rank, world_size=world.size)
    return current()


def export_slurm_rendezvous() -> None:
    """Inside a SLURM job submitted by submitit (hydra/launcher=submitit_slurm): the first node
    and a port from the job id as the meeting point, as submitit exports them for torch."""
    try:
        from submitit.helpers import TorchDistributedEnvironment
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    except Exception:  # not a submitit job, or submitit missing: the caller says what to set
        pass


def leave() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if current().distributed:
        dist.barrier()


def sum_(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over the ranks (itself in a single process)."""
    if current().distributed:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


def from_main(obj: Any) -> Any:
    """Rank 0's `obj`, on every rank."""
    if not current().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def digest(tensors) -> str:
    """A short hash of tensors' values (masks, say), to compare across ranks."""
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def check_agree(what: str, value: str) -> None:
    """Fail on every rank when the ranks' `value`s of `what` differ (a decision taken apart)."""
    world = current()
    if not world.distributed:
        return
    values = [None] * world.size
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        raise RuntimeError(f"ranks disagree on {what}: {values} (a decision computed from "
                           "rank-local data; please report it)")
