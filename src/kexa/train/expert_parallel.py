"""Expert parallelism (EP): each rank of an `ep` mesh holds E/ep of a layer's routed experts and
tokens travel to their experts by all-to-all — applied from outside the model.

`apply_expert_parallel(model, ep_mesh)` replaces every `mlp.experts` (model/moe.py `Experts`) by an
`ExpertParallelExperts` with the same parameter names; its `gate_up_proj (E, 2I, C)` and
`down_proj (E, C, I)` become DTensors sharded on dim 0 over the ep mesh (torchtitan's
`ExpertParallel` layout), so a full state dict still shows the whole (E, ·, ·) stacks, a per-expert
optimiser (Muon's batched Newton–Schulz) stays local, and FSDP2 can shard the rest on top.

One MoE forward on rank r (DeepSeek-V3 / GShard dispatch–combine; dropless, no capacity factor):
    1. sort this rank's N*k (token, expert) assignments by expert id: with experts laid out
       contiguously by owner, the sorted rows are already grouped by destination rank
    2. exchange per-expert row counts (all_to_all of E ints), then the rows themselves
       (all_to_all of (N*k, C)); received rows are ordered (source rank, local expert)
    3. regroup by local expert and run the SwiGLU experts as grouped matmuls (same kernel as moe.py)
    4. send the outputs back by the reverse all_to_all, weight them in fp32 and sum per token
The returned counts are this rank's GLOBAL per-expert counts (E,), exactly what the single-process
`Experts` returns, so balance statistics and the trainer's bias update are unchanged by EP.

Autograd: the token exchanges use `all_to_all_single_autograd` (functional collectives), whose
backward is the reverse exchange, so expert gradients collect the contributions of every rank's
tokens. Each rank's loss is its token sum over the global token count times the data-parallel
size (loop.py; FSDP2 averages the other gradients over ranks), so those gradients are a SUM over
data ranks of that; `parallelize()` divides them by the data-parallel size (FSDP's gradient
divide factor), which leaves the gradient of sum(token losses) / global count, as for every other
parameter.

    torchrun --nproc_per_node=2 -m pytest tests/test_distributed.py   (see docs/distributed.md)

Shape legend: N tokens on this rank, k experts per token, A = N*k assignments, R rows received,
E experts, El = E/ep local experts, C hidden, I expert width, ep expert-parallel ranks.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed._functional_collectives import all_to_all_single_autograd
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Shard, distribute_tensor

from ..model.moe import Experts, grouped_matmul


class ExpertParallelExperts(Experts):
    """Drop-in for `Experts` on an ep mesh: same parameter names, dim 0 sharded over the mesh. A
    subclass, so what treats experts by type (init_weights, the optimiser split) treats these alike."""

    def __init__(self, experts: Experts, ep_mesh: DeviceMesh):
        nn.Module.__init__(self)  # Experts.__init__ would allocate the full stacks
        E = experts.gate_up_proj.shape[0]
        ep = ep_mesh.size()
        if E % ep:
            raise ValueError(f"expert parallelism needs num_experts ({E}) divisible by the ep size ({ep})")
        self.num_experts, self.ep_mesh = E, ep_mesh
        self.fp8 = experts.fp8  # the FP8 GEMM backend enable_fp8 chose (applied before parallelize)
        # distribute_tensor scatters rank 0's full stacks, so every rank ends with the same experts
        # whatever its own initialisation was (on the meta device: shapes only, init_sharded fills them)
        self.gate_up_proj = nn.Parameter(distribute_tensor(experts.gate_up_proj.detach(), ep_mesh, [Shard(0)]))
        self.down_proj = nn.Parameter(distribute_tensor(experts.down_proj.detach(), ep_mesh, [Shard(0)]))

    def forward(self, x: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor):
        """x (N, C), idx/weight (N, k) -> (N, C) and this rank's per-expert token counts (E,)."""
        N, k = idx.shape
        E, ep, group = self.num_experts, self.ep_mesh.size(), self.ep_mesh.get_group()
        El = E // ep
        flat = idx.reshape(-1)  # (A,)
        order = flat.argsort(stable=True)  # assignments grouped by expert, hence by owner rank
        token = order // k  # token of each sorted assignment
        counts = torch.bincount(flat, minlength=E)  # (E,) global expert ids: the balance statistics

        # --- dispatch: counts first (so each rank knows what it will receive), then the rows
        recv_counts = torch.empty_like(counts)
        dist.all_to_all_single(recv_counts, counts, group=group)  # no gradient: plain collective
        recv_counts = recv_counts.view(ep, El)  # (source rank, local expert)
        send_splits = counts.view(ep, El).sum(1).tolist()
        recv_splits = recv_counts.sum(1).tolist()
        rows = all_to_all_single_autograd(x[token], recv_splits, send_splits, group)  # (R, C)

        # --- local experts: received rows are ordered (source rank, local expert); regroup by expert
        local_expert = torch.arange(El, device=x.device).repeat(ep).repeat_interleave(recv_counts.reshape(-1))  # (R,)
        regroup = local_expert.argsort(stable=True)
        local_counts = recv_counts.sum(0)  # (El,)
        offsets = local_counts.cumsum(0).to(torch.int32)
        # this rank's expert slices (El, ., .); under FSDP2 the DTensors are unsharded over dp_mod_ep here
        gate_up, down = self.gate_up_proj.to_local(), self.down_proj.to_local()
        h = grouped_matmul(rows[regroup], gate_up, local_counts, offsets, self.fp8)  # (R, 2I)
        gate, up = h.chunk(2, dim=-1)
        y = grouped_matmul(F.silu(gate) * up, down, local_counts, offsets, self.fp8)  # (R, C)
        y = torch.empty_like(y).index_copy(0, regroup, y)  # back to (source rank, local expert) order

        # --- combine: reverse exchange, then the same fp32 weighting and sum as the local Experts
        y = all_to_all_single_autograd(y, send_splits, recv_splits, group)  # (A, C), sorted order
        y = y.float() * weight.reshape(-1)[order, None]
        out = torch.zeros(N, x.shape[1], dtype=torch.float32, device=x.device).index_add_(0, token, y)
        return out.to(x.dtype), counts


def apply_expert_parallel(model: nn.Module, ep_mesh: DeviceMesh) -> list[ExpertParallelExperts]:
    """Swap every `Experts` of the model for its expert-parallel twin; returns the new modules."""
    if not dist.is_initialized():
        raise RuntimeError("expert parallelism needs torch.distributed (call init_distributed() under torchrun)")
    swapped = []
    for module in list(model.modules()):
        experts = getattr(module, "experts", None)
        if isinstance(experts, Experts) and not isinstance(experts, ExpertParallelExperts):
            module.experts = ExpertParallelExperts(experts, ep_mesh)
            swapped.append(module.experts)
    if not swapped:
        raise ValueError("expert parallelism requested but the model has no MoE layers")
    return swapped
