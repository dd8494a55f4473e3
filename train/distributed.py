"""Several training processes under ``torchrun``: gloo on the CPU, nccl on CUDA GPUs.

Every process holds the whole (small, cached) training split and the same seeded generator, so
all draw the same epoch order and the same global batches as one process would; each takes the
rows ``rank::world_size`` of every global batch (the rule ``DistributedSampler`` applies to a
dataset) and DDP sums the gradients. Validation rows are split the same way and the logits
gathered, so every process computes the same metrics and makes the same choices; rank 0 alone
writes files. Without torchrun's variables (or with ``WORLD_SIZE=1``) nothing here does anything.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler

from lungdemo.device import check_device_spec, resolve_device
from lungdemo.errors import LungdemoError

logger = logging.getLogger(__name__)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
TIMEOUT = timedelta(minutes=30)
"""How long a process waits for the others at a collective (rank 0's test evaluation runs alone)."""


class DistributedError(LungdemoError, RuntimeError):
    """torchrun's environment is incomplete, or the device cannot be shared out between processes."""


@dataclass(frozen=True)
class DistContext:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def summary(self) -> dict[str, Any]:
        """What ``training_args.json`` records about the processes."""
        return {"world_size": self.world_size, "backend": self.backend}


def env_ranks(env: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's variables; ``(0, 1, 0)`` without them."""
    env = os.environ if env is None else env
    present = [v for v in TORCHRUN_VARS if v in env]
    if not present:
        return 0, 1, 0
    if "WORLD_SIZE" not in env or "RANK" not in env:
        raise DistributedError(
            f"found {present} but not all of RANK and WORLD_SIZE: start several processes with "
            f"torchrun --nproc_per_node N -m train ..., not by setting these variables by hand"
        )
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError as exc:
        raise DistributedError(f"torchrun variables are not integers: {exc}") from exc
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DistributedError(f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local} do not fit together")
    return rank, world, local


def is_main_process(env: Mapping[str, str] | None = None) -> bool:
    """Rank 0 (or no torchrun), from the environment alone: before the process group exists."""
    return env_ranks(env)[0] == 0


def launch_command(module: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The command line that started this run, as recorded with its model: ``python -m ...`` or
    ``torchrun --nproc_per_node N -m ...`` (``--nnodes`` too when there are several machines)."""
    env = os.environ if env is None else env
    args = " ".join(shlex.quote(a) for a in argv)
    _, world, _ = env_ranks(env)
    if world == 1:
        return f"python -m {module} {args}"
    per_node = int(env.get("LOCAL_WORLD_SIZE", world))
    nodes = f"--nnodes {world // per_node}" if per_node != world else "--standalone"
    return f"torchrun {nodes} --nproc_per_node {per_node} -m {module} {args}"


def backend_for(device: torch.device) -> str:
    if device.type == "cuda":
        return "nccl"
    if device.type == "cpu":
        return "gloo"
    raise DistributedError(f"torch.distributed has no backend for {device.type}: use --device cpu or cuda")


def init_distributed(device_spec: str, env: Mapping[str, str] | None = None) -> DistContext:
    """Resolve the device and, under torchrun with several processes, join the process group.

    Each process takes the GPU of its ``LOCAL_RANK``; naming one GPU (``cuda:1``) for all of
    them is refused, as is MPS, which torch.distributed cannot use.
    """
    rank, world, local = env_ranks(env)
    spec = check_device_spec(device_spec)
    if world == 1:
        return DistContext(device=resolve_device(spec))
    if spec.startswith("cuda:"):
        raise DistributedError(
            f"--device {spec} under torchrun would put all {world} processes on one GPU: "
            f"pass --device cuda (each process takes the GPU of its LOCAL_RANK)"
        )
    device = resolve_device(spec, local_rank=local)
    backend = backend_for(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=TIMEOUT)
    return DistContext(rank=rank, world_size=world, local_rank=local, device=device, backend=backend)


def quiet_unless_main(ctx: DistContext) -> None:
    """Processes other than rank 0 log warnings only (rank 0 speaks for all)."""
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.WARNING)


@contextmanager
def main_first(ctx: DistContext) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. decoding into the shared cache), then the others do."""
    if ctx.enabled and not ctx.is_main:
        dist.barrier()
    yield
    if ctx.enabled and ctx.is_main:
        dist.barrier()


def cleanup(ctx: DistContext) -> None:
    """Leave the process group (each process on its own; no collective, so none waits)."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DDP around ``model`` with several processes (it broadcasts rank 0's weights); else ``model``."""
    if not ctx.enabled:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP (for evaluation and ``state_dict`` without ``module.`` prefixes)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def shard(rows: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This process's rows of a global batch: ``rows[rank::world_size]``."""
    return rows[ctx.rank :: ctx.world_size] if ctx.enabled else rows


def min_global_batch(ctx: DistContext) -> int:
    """Smaller global batches are skipped: a batch of 1 cannot be mixed, and every process needs a row."""
    return max(2, ctx.world_size)


def shard_cross_entropy(
    criterion: nn.CrossEntropyLoss,
    logits: torch.Tensor,
    target: torch.Tensor,
    batch_target: torch.Tensor,
    ctx: DistContext,
) -> torch.Tensor:
    """This process's part of ``criterion`` over the global batch whose labels are ``batch_target``.

    ``criterion``'s mean divides by the global batch's total class weight, not the shard's, and
    the part is multiplied by ``world_size``: DDP averages gradients, so their average is then
    exactly the gradient of the one-process loss (label smoothing included).
    """
    total = F.cross_entropy(
        logits, target, weight=criterion.weight, label_smoothing=criterion.label_smoothing, reduction="sum"
    )
    weight = criterion.weight
    denom = weight[batch_target].sum() if weight is not None else torch.tensor(float(len(batch_target)))
    return total / denom.to(total.device) * ctx.world_size


def shard_batchmean(per_row_sum: torch.Tensor, batch_size: int, ctx: DistContext) -> torch.Tensor:
    """A ``batchmean`` term (e.g. distillation's KL) summed over this shard, as a part of the global mean."""
    return per_row_sum / batch_size * ctx.world_size


def eval_sampler(n: int, ctx: DistContext) -> DistributedSampler:
    """Rows ``rank::world_size`` of ``n``, in order, padded so every process has as many."""
    return DistributedSampler(range(n), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=False)


def all_sum(value: float | torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The sum of a number over the processes (float64 on this process's device)."""
    t = torch.as_tensor(value, dtype=torch.float64, device=ctx.device).clone()
    if ctx.enabled:
        dist.all_reduce(t)
    return t


def eval_rows(n: int, ctx: DistContext) -> torch.Tensor:
    """The row indices :func:`eval_sampler` gives this process (all of ``0..n-1`` for one process)."""
    return torch.arange(n) if not ctx.enabled else torch.tensor(list(eval_sampler(n, ctx)), dtype=torch.long)


def gather_rows(local: torch.Tensor, n: int, ctx: DistContext) -> torch.Tensor:
    """Undo :func:`eval_sampler`: every process's rows, back in the order ``0..n-1``, on every process."""
    if not ctx.enabled:
        return local
    parts = [torch.empty_like(local) for _ in range(ctx.world_size)]
    dist.all_gather(parts, local.contiguous())
    # row j of rank r is global row r + j * world_size; the padding past n is dropped
    return torch.stack(parts, dim=1).reshape(-1, *local.shape[1:])[:n]


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """One picklable object from each process, in rank order (e.g. their RNG states)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every process (a decision all must share)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
