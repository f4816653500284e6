"""The one distributed-helpers module: rank and world size, and collectives that run on the
process group's device — every other file of kexa calls these, never `torch.distributed` directly
for a reduction.

The device rule. A collective must receive tensors on its process group's device: NCCL rejects CPU
tensors ("No backend type associated with device type cpu") and gloo works on CPU. The trainer's
bookkeeping (token counts, loss sums, expert loads for the bias update, the stop flag) is naturally
CPU float64, so each helper here moves its tensor to `group_device(group)`, reduces there and writes
the result back into the caller's tensor, on the caller's device:

    group backend        group_device(group)
    nccl                 cuda:<current device>   (set per rank from LOCAL_RANK by init_distributed)
    gloo (and others)    cpu

Not launched by torchrun (no process group, or a group of one) every helper returns the
single-process answer without touching `torch.distributed`, so callers need no branches.

    rank(), world_size(), is_main()        who am I (0, 1, True without a group)
    all_reduce_sum/mean/max(t)             in place over all ranks, returns t (any device, any dtype)
    any_rank(flag) -> bool                 True everywhere if True on any rank (collective decisions)
    broadcast(t, src)                      in place from rank src
    barrier(), main_process_first()        ordering

    python -c "from kexa.train import dist; print(dist.rank(), dist.world_size())"
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.distributed as dist


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if initialized() else 1


def distributed() -> bool:
    """More than one process: collectives have work to do."""
    return world_size() > 1


def is_main() -> bool:
    """Rank 0 logs, writes files and draws plots."""
    return rank() == 0


def group_device(group=None) -> torch.device:
    """The device a collective of `group` must receive its tensors on (see the module docstring)."""
    if "nccl" in str(dist.get_backend(group)).lower():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _reduce(t: torch.Tensor, op, group=None) -> torch.Tensor:
    """all_reduce `t` in place with `op`, through a copy on the group's device when t is elsewhere."""
    if not distributed():
        return t
    device = group_device(group)
    work = t if t.device == device else t.to(device)  # (shape of t) on the group's device
    dist.all_reduce(work, op=op, group=group)
    if work is not t:
        t.copy_(work)
    return t


def all_reduce_sum(t: torch.Tensor, group=None) -> torch.Tensor:
    """In-place sum over all ranks (token counts, loss sums, expert loads); returns t."""
    return _reduce(t, dist.ReduceOp.SUM, group)


def all_reduce_max(t: torch.Tensor, group=None) -> torch.Tensor:
    """In-place max over all ranks; returns t."""
    return _reduce(t, dist.ReduceOp.MAX, group)


def all_reduce_mean(t: torch.Tensor, group=None) -> torch.Tensor:
    """In-place mean over all ranks (a SUM then a division: gloo has no AVG); returns t."""
    _reduce(t, dist.ReduceOp.SUM, group)
    return t.div_(dist.get_world_size(group)) if distributed() else t


def any_rank(flag: bool, group=None) -> bool:
    """True on every rank if it is True on any rank: collective decisions (stop on a signal that
    reached the ranks at different steps) must be taken by all ranks at the same step."""
    return bool(all_reduce_max(torch.tensor([float(flag)]), group).item())


def broadcast(t: torch.Tensor, src: int = 0, group=None) -> torch.Tensor:
    """In-place copy of rank `src`'s t to every rank (same device rule); returns t."""
    if not distributed():
        return t
    device = group_device(group)
    work = t if t.device == device else t.to(device)
    dist.broadcast(work, src=src, group=group)
    if work is not t:
        t.copy_(work)
    return t


def barrier() -> None:
    if distributed():
        dist.barrier()


@contextmanager
def main_process_first():
    """Rank 0 runs the block first (e.g. building data caches), the others after it has finished
    (then reusing what it wrote): `with main_process_first(): data = prepare_data(recipe)`."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()
