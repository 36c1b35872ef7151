"""Several training processes under ``torchrun``: the process group and the few collectives training needs.

``torchrun`` starts one process per device and tells each who it is through
the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, plus the rendezvous
address). Without those variables, or with ``WORLD_SIZE=1``, nothing here
starts a process group and every helper is the single-process identity, so a
plain ``longtail train`` runs exactly as it always did.

Backends: NCCL between CUDA devices (process ``LOCAL_RANK`` drives
``cuda:LOCAL_RANK``), gloo between CPU processes.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError, LongtailError

T = TypeVar("T")
# Attribute set on an error every rank raised alike, so that only rank 0 prints it.
_ON_ALL_RANKS = "raised_on_all_ranks"


@dataclass(frozen=True)
class LaunchEnv:
    """Who this process is, as torchrun set it: ``rank`` of ``world_size``, ``local_rank`` on its machine."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """Whether there are other processes to work with."""
        return self.world_size > 1


def launch_env() -> LaunchEnv:
    """The torchrun variables of this process; a single process when they are absent."""

    def number(name: str, default: int) -> int:
        text = os.environ.get(name, str(default))
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"environment variable {name}={text!r}: expected an integer (set by torchrun)") from None

    env = LaunchEnv(number("WORLD_SIZE", 1), number("RANK", 0), number("LOCAL_RANK", 0))
    if not 0 <= env.rank < max(env.world_size, 1):
        raise ConfigError(f"environment variable RANK={env.rank}: expected 0 <= RANK < WORLD_SIZE={env.world_size}")
    return env


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """Hide torchrun's variables for a while, so that code run on one rank does not wait for the others."""
    saved = os.environ.get("WORLD_SIZE")
    os.environ["WORLD_SIZE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("WORLD_SIZE", None)
        else:
            os.environ["WORLD_SIZE"] = saved


def is_initialized() -> bool:
    """Whether a process group is running (torch.distributed may even be absent from the build)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes in the running group; 1 without one."""
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    """This process's rank in the running group; 0 without one."""
    return dist.get_rank() if is_initialized() else 0


def is_main() -> bool:
    """Whether this process is rank 0 (the one that writes files and logs); True without a group."""
    return rank() == 0


def process_device(device: torch.device, env: LaunchEnv) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when training on CUDA, else ``device`` unchanged."""
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if env.local_rank >= count:
        raise ConfigError(
            f"LOCAL_RANK={env.local_rank}: this machine has {count} CUDA device(s); "
            f"start at most {count} processes per node (torchrun --nproc_per_node {count})"
        )
    device = torch.device("cuda", env.local_rank)
    torch.cuda.set_device(device)  # NCCL's object collectives use the current device
    return device


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Join torchrun's process group for the duration of the block; yields this rank's device.

    Without torchrun (or when the caller already started a group) nothing is
    started or stopped and ``device`` comes back unchanged. The group is
    destroyed on leaving the block: after a barrier on a clean exit, at once
    when an error escapes it.
    """
    env = launch_env()
    if not env.distributed or is_initialized():
        yield device
        return
    device = process_device(device, env)
    if device.type == "cuda":
        # device_id (torch >= 2.3) binds the group to this rank's GPU: barriers then know which one to use.
        bound = {"device_id": device} if "device_id" in inspect.signature(dist.init_process_group).parameters else {}
        dist.init_process_group("nccl", **bound)
    else:
        dist.init_process_group("gloo")
    try:
        yield device
    except BaseException:
        dist.destroy_process_group()  # no barrier: the other ranks may never reach one
        raise
    # A clean exit: every rank's last collective is complete before any rank tears the group down. Without
    # this, rank 1 may close its sockets while rank 0's gloo threads still finish the final broadcast, and
    # rank 0 aborted once ("terminate called without an active exception", exit -6) in a full test run.
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    """Where tensors must be for the group's backend: the current CUDA device for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over all ranks (a new tensor on ``values``'s device); ``values`` without a group."""
    if not is_initialized():
        return values
    total = values.detach().to(_collective_device(), copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(values.device)


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` (any picklable value) on every rank; ``obj`` without a group."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order; ``[obj]`` without a group."""
    if not is_initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    """Wait until every rank gets here; nothing without a group."""
    if is_initialized():
        dist.barrier()


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Overwrite every buffer of ``module`` (BatchNorm running statistics) with rank ``src``'s.

    DDP syncs buffers before each training forward, but each rank's last forward
    then updates its own copy; this makes every rank hold exactly the model rank
    ``src`` checkpoints.
    """
    if not is_initialized():
        return
    for buffer in module.buffers():
        staged = buffer.detach().to(_collective_device(), copy=True)
        dist.broadcast(staged, src=src)
        buffer.copy_(staged.to(buffer.device))


def agree(check: Callable[[], T]) -> T:
    """Run ``check`` on every rank and fail on all of them if it failed on any.

    A :class:`LongtailError` raised by ``check`` on any rank is raised on every
    rank (the lowest failing rank's, its message prefixed with the rank when not
    0), marked so that only rank 0 reports it. Without this, a rank that fails
    alone would leave the others waiting in the next collective.

    Returns:
        What ``check`` returned on this rank.
    """
    if not is_initialized():
        return check()
    result: T | None = None
    error: LongtailError | None = None
    try:
        result = check()
    except LongtailError as caught:
        error = caught
    for failed_rank, failure in enumerate(all_gather_objects(error)):
        if failure is not None:
            if failed_rank == rank():
                failure = error  # this rank's own error, with its traceback
            elif failed_rank != 0:
                failure = type(failure)(f"rank {failed_rank}: {failure}")
            setattr(failure, _ON_ALL_RANKS, True)
            raise failure from None
    return result  # type: ignore[return-value]


def reported_by_rank0(error: BaseException) -> bool:
    """Whether ``error`` was raised alike on every rank and this is not rank 0 (so rank 0 reports it)."""
    return bool(getattr(error, _ON_ALL_RANKS, False)) and launch_env().rank != 0


def per_rank_batch(batch_size: int, replicas: int) -> int:
    """Images per step on each of ``replicas`` processes for a global ``train.batch_size``."""
    if batch_size % replicas:
        raise ConfigError(
            f"train.batch_size={batch_size}: the global batch must divide evenly among the {replicas} processes "
            f"(world size {replicas}); use a multiple of {replicas}"
        )
    return batch_size // replicas


def shard(length: int, replicas: int, index: int) -> range:
    """Contiguous part ``index`` of ``replicas`` of ``range(length)``; the parts in order make up the whole."""
    return range(length * index // replicas, length * (index + 1) // replicas)
