"""Keep ``initialize`` and ``calibrate`` identical on every rank of a ``torch.distributed`` process group.

The policy (see ``docs/distributed.md``):

* **statistics are global**: every number measured on the data (the input statistics of ``initialize``, the
  spike rates of ``calibrate``) is computed from sums all-reduced (SUM) over the group, so each rank sees the
  statistics of the global batch (the concatenation of the per-rank batches) and makes the same decisions;
* **weights come from rank 0**: after writing, the weights are broadcast from the group's rank 0, so they are
  identical bit for bit whatever each rank's random number generator held.

Every helper is a no-op when ``torch.distributed`` is unavailable, not initialized, the group has one rank,
or ``group is False`` (synchronisation switched off). ``group=None`` means the default (world) group.

Collectives block until every rank of the group calls them: all ranks must call ``initialize`` /
``calibrate`` with the same model and settings (errors raised on one rank only leave the others waiting).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

__all__ = ["is_distributed", "world_size", "rank", "all_reduce_counts", "all_reduce_sums", "broadcast_parameters"]

# ``group`` arguments: None (the world group), a ProcessGroup, or False (no synchronisation)
Group = Any


def torch_distributed():
    """``torch.distributed`` when usable, else None (some builds ship without it)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - builds without distributed support
        return None
    return dist if dist.is_available() else None


def is_distributed(group: Group = None) -> bool:
    """True when ``group`` (None: the world group) is an initialized process group of more than one rank that
    this process belongs to; False when torch.distributed is missing or not initialized, or ``group is False``."""
    if group is False:
        return False
    dist = torch_distributed()
    if dist is None or not dist.is_initialized():
        return False
    return dist.get_world_size(group) > 1  # -1 for a group this rank is not part of


def world_size(group: Group = None) -> int:
    """Number of ranks that synchronise (1 when not distributed)."""
    return torch_distributed().get_world_size(group) if is_distributed(group) else 1


def rank(group: Group = None) -> int:
    """This process's rank inside ``group`` (0 when not distributed)."""
    return torch_distributed().get_rank(group) if is_distributed(group) else 0


def collective_device(group: Group) -> torch.device:
    """NCCL reduces CUDA tensors only; every other backend (gloo, mpi) takes CPU tensors."""
    backend = str(torch_distributed().get_backend(group)).lower()
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")


def all_reduce_sums(values: Sequence[float], group: Group = None, dtype: torch.dtype = torch.float64) -> list[float]:
    """Element-wise sum of ``values`` over the ranks of ``group`` (unchanged when not distributed).

    One collective for the whole vector; float64 keeps sums of float32 data exact to ~1e-16 relative.
    """
    if not is_distributed(group):
        return list(values)
    buffer = torch.tensor(list(values), dtype=dtype, device=collective_device(group))
    torch_distributed().all_reduce(buffer, op=torch_distributed().ReduceOp.SUM, group=group)
    return buffer.cpu().tolist()


def all_reduce_counts(counts: Sequence[int], group: Group = None) -> list[int]:
    """Element-wise sum of integer ``counts`` (spikes, elements) over ``group``, exactly (int64).

    Integer sums do not depend on the order of addition, so every rank gets the same bits, and the same
    numbers as one process counting the concatenated batch.
    """
    return [int(v) for v in all_reduce_sums([int(c) for c in counts], group, dtype=torch.int64)]


def _global_src(src: int, group: Group) -> int:
    """``torch.distributed.broadcast`` takes the source's global rank; ``src`` is its rank inside ``group``."""
    if group is None:
        return src
    return torch_distributed().get_global_rank(group, src)


def broadcast_parameters(params: Iterable[torch.Tensor], src: int = 0, group: Group = None) -> None:
    """Overwrite every tensor in ``params`` with its value on rank ``src`` of ``group`` (in place, no autograd).

    All ranks must pass the same tensors (same shapes, dtypes and order). A no-op when not distributed.
    """
    if not is_distributed(group):
        return
    dist, source = torch_distributed(), _global_src(src, group)
    device = collective_device(group)
    with torch.no_grad():
        for param in params:
            # collectives need a contiguous tensor on the backend's device; copy back where that is a copy
            buffer = param.detach()
            staged = buffer.device != device or not buffer.is_contiguous()
            if staged:
                buffer = buffer.to(device).contiguous()
            dist.broadcast(buffer, src=source, group=group)
            if staged:
                param.detach().copy_(buffer)
