"""The process group of the multi-process tests: two or more CPU processes on gloo, rendezvous through a file.

Every rank meets the others at a barrier before it destroys its group: a rank that tore its group down and exited
while a peer was still finishing its last collective aborted at interpreter exit ("terminate called without an
active exception", about one run in 15 on a loaded 2-core machine)."""
from __future__ import annotations

import datetime
from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist


@contextmanager
def gloo_group(rank: int, world: int, init_file: str, timeout_s: float) -> Iterator[None]:
    """Join the group (a stuck collective fails after ``timeout_s`` instead of hanging), run the block, and on a
    normal exit wait for every rank before leaving; the group is destroyed on any exit."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()
