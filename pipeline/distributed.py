"""Training on several processes under torchrun, with DistributedDataParallel (DDP).

``torchrun --nproc_per_node N -m pipeline train ...`` starts N copies of the command;
:func:`session` joins them into one process group (gloo on CPU, NCCL on CUDA) from the
variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...).
Without torchrun (``WORLD_SIZE`` unset or 1) every function here leaves things as they
are, so a single process behaves exactly as before.

Division of work: rank 0 prepares the data (ingest, split, preprocessing cache) while
the others wait, then every process loads it.  Each process draws 1/N of every batch
from its own disjoint shard of the labelled and unlabelled scans, and DDP averages the
gradients, so all processes take the same optimiser steps.  Rank 0 alone evaluates and
writes the run folder; round hooks (pseudo-labelling) all see rank 0's predictions.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

# Methods whose every trained parameter gets a gradient at every step (DDP's reducer
# requires it) and whose round hooks predict only through the trainer's broadcast.
SUPPORTED_METHODS = ("supervised", "self_training", "fixmatch", "mean_teacher", "pi_model", "vat", "co_teaching")
# Rank 0 may ingest and preprocess a whole archive while the others wait at a barrier.
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_size: int = 1  # processes on this machine

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> int:
        """This process's part of a batch of ``n``: the parts of all processes add up to ``n``."""
        return n // self.size + (1 if self.rank < n % self.size else 0)

    def seed(self, base: int) -> int:
        """A seed of this process's own; rank 0 keeps ``base``."""
        return base + 10_007 * self.rank


def world() -> World:
    """The current process group's view, or a single process when none is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def launched_as_main() -> bool:
    """False only in a process torchrun started with a rank other than 0 (before or after :func:`session`)."""
    return int(os.environ.get("RANK", "0")) == 0


def under_torchrun() -> bool:
    """True in every process of a torchrun launch of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def session(device: torch.device):
    """Join torchrun's process group for the block when ``WORLD_SIZE`` > 1; yield :func:`world`.

    The backend follows ``device``: NCCL for CUDA (each process on GPU ``LOCAL_RANK``),
    gloo otherwise.  Nested sessions reuse the group; the outermost one destroys it.
    Processes other than rank 0 log warnings only, so messages are not repeated N times.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield world()
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    if dist.get_rank() != 0:
        logging.getLogger("pipeline").setLevel(logging.WARNING)
    try:
        yield world()
    except BaseException:
        # Other processes may still wait in a collective: NCCL's teardown would wait for
        # them too (torchrun ends them), gloo's is local.
        if dist.get_backend() == "gloo":
            dist.destroy_process_group()
        raise
    # Free what still holds the group first (a DDP wrapper in a reference cycle): a gloo
    # group left to interpreter exit can abort the process after a successful run.
    gc.collect()
    dist.destroy_process_group()


def barrier() -> None:
    if world().size > 1:
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first (writing shared files); the others run it after it finishes."""
    w = world()
    if not w.main:
        barrier()
    yield
    if w.main:
        barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every process (any picklable object)."""
    if world().size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_main(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` computed on rank 0 only, its result handed to every process.

    Every process must make the same calls in the same order (as identical round hooks do).
    """
    if world().size == 1:
        return function

    def shared(*args, **kwargs):
        return broadcast(function(*args, **kwargs) if world().main else None)

    return shared


def average(values: dict[str, float]) -> dict[str, float]:
    """Each number's mean over the processes that reported it (a term may be absent on some)."""
    if world().size == 1:
        return values
    everyone: list[dict[str, float]] = [{} for _ in range(world().size)]
    dist.all_gather_object(everyone, values)
    keys = dict.fromkeys(key for reported in everyone for key in reported)
    return {key: float(np.mean([reported[key] for reported in everyone if key in reported])) for key in keys}


def total(value: float) -> float:
    """The sum of ``value`` over the processes."""
    if world().size == 1:
        return value
    everyone: list[float] = [0.0] * world().size
    dist.all_gather_object(everyone, value)
    return sum(everyone)


def shard(index: torch.Tensor, w: World | None = None) -> torch.Tensor:
    """This process's disjoint share of ``index``: every ``size``-th entry from ``rank``.

    The shards of all processes together are ``index``; a stride (not blocks) gives each
    shard about the same class mix when ``index`` is ordered by class.
    """
    w = w or world()
    return index if w.size == 1 else index[w.rank::w.size]


class _Losses(nn.Module):
    """``method.losses`` as a module's forward, so DDP hooks every gradient it produces."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, batch):
        return self.method.losses(batch)


def wrap(method: nn.Module, config, n_labelled: int, w: World | None = None) -> Callable:
    """The trainer's loss function: ``method.losses`` itself, or under DDP through a wrapper.

    With several processes this also refuses what cannot be shared out (unsupported
    methods, fewer labelled scans or a smaller batch than processes) and seeds torch's
    global generator per process, so dropout masks differ between processes.  DDP
    copies rank 0's weights and buffers to every process when it wraps.
    """
    w = w or world()
    if w.size == 1:
        return method.losses
    name = config.method_name
    if name not in SUPPORTED_METHODS:
        raise ValueError(f"method '{name}' cannot train under torchrun yet (supported: "
                         f"{', '.join(SUPPORTED_METHODS)}); train it in one process")
    if n_labelled < w.size or config.train.batch_size < w.size:
        raise ValueError(f"{w.size} processes need at least one labelled scan and one train.batch_size "
                         f"place each; the split has {n_labelled} labelled scans and train.batch_size is "
                         f"{config.train.batch_size}")
    torch.manual_seed(w.seed(config.seed))
    device = next(method.parameters()).device
    return nn.parallel.DistributedDataParallel(_Losses(method),
                                               device_ids=[device.index] if device.type == "cuda" else None)
