"""Distributed training setup: process group and device mesh from `torchrun`, and `parallelize()`,
which applies expert parallelism, activation checkpointing and FSDP2 to a KExaone from outside.

Launch (CPU, gloo; NCCL is chosen automatically when CUDA is present):
    OMP_NUM_THREADS=1 torchrun --nproc_per_node=2 -m kexa.cli pretrain --config configs/tiny.toml ...

Mesh. `init_distributed(ep_size)` builds a 2-D mesh ("dp_mod_ep", "ep") of shape
(world / ep_size, ep_size) and flattens it into "dp" (every rank: the data-parallel dimension);
it returns the three as a `Mesh`. Each rank reads its own slice of the global batch (rank r of
`dist.world_size()`); with ep_size = 1 there is only the 1-D "dp" mesh. Rank, world size and the
collectives (which put tensors on the group's device: NCCL rejects CPU tensors) live in dist.py.

`parallelize()` follows torchtitan's order (parallelize_deepseekv3):
    1. EP     expert stacks sharded on dim 0 over "ep"; tokens exchanged by all-to-all
              (expert_parallel.py). EP lives *inside* DP (DeepSeek style): the ep ranks are also
              data ranks, each with its own tokens.
    2. AC     per decoder layer (the model's own `activation_checkpointing` switch)
    3. FSDP2  `fully_shard` on each router (under bf16 only: kept fp32), on each EP expert group
              (over "dp_mod_ep", the ranks that hold the SAME experts), on each decoder layer and the
              MTP block, then on the root (embeddings, final norm, head) — all over "dp".
Gradients: FSDP2 averages over "dp" by its divide factor. Expert gradients already sum the
tokens of all ep ranks (all-to-all backward), so their FSDP group (over "dp_mod_ep" only) gets the
same divide factor, the full dp size (torchtitan does the same); when "dp_mod_ep" has one rank
FSDP has nothing to shard, the experts are left out of FSDP and a gradient hook divides instead.

Router numerics: the router weight stays fp32 under a bf16 `MixedPrecisionPolicy` (its own FSDP
group with an fp32 policy; reference: HF `_keep_in_fp32_modules_strict`, DeepSeek-V3 §3.3), and
`e_score_correction_bias` is a buffer: FSDP2 does not shard buffers, so each rank holds a full copy.
`parallelize()` broadcasts parameters and buffers from rank 0 first; the trainer then keeps the
bias replicated by updating it from all-reduced expert loads (same inputs -> same update on every
rank); `buffers_in_sync()` checks that.

Meta-device models: `parallelize()` also takes a model built on the meta device; it shards it and
allocates only this rank's shards (`to_empty`), and `init_sharded(model, seed)` fills them with the
values a single-process `init_weights(seed)` draws (each tensor drawn in full, one at a time, the
rank's block kept), so no rank ever materialises the whole model.

Final model: `full_state_dict()` gathers the full (unsharded) tensors to rank 0's CPU and
`save_full_pretrained()` writes them as the HF folder through `model.save_pretrained` there
(training checkpoints are sharded instead: checkpoint.py).

Not launched by torchrun (no WORLD_SIZE): `init_distributed()` returns None and every helper
degrades to the single-process answer, so the trainer needs no branches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

from ..model.moe import Router
from ..model.transformer import KExaone
from . import dist as D
from .expert_parallel import apply_expert_parallel

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
          "fp32": torch.float32, "float32": torch.float32}


# ---------------------------------------------------------------------------------- process group
@dataclass(frozen=True)
class Mesh:
    """The device meshes of one job. dp: every rank (data parallel, FSDP2); ep: the ranks that
    split one layer's experts; dp_mod_ep: the ranks holding the same experts (FSDP of experts)."""
    dp: DeviceMesh
    ep: DeviceMesh | None = None
    dp_mod_ep: DeviceMesh | None = None

    @property
    def ep_size(self) -> int:
        return self.ep.size() if self.ep is not None else 1


_MESHES: dict[int, Mesh] = {}  # by ep_size: init_distributed() may be called again (pretrain, then the loop)


def init_distributed(ep_size: int = 1, backend: str | None = None,
                     timeout: timedelta = timedelta(minutes=10)) -> Mesh | None:
    """Join the torchrun job (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and build the meshes;
    later calls return the same Mesh. Returns None when not launched by torchrun.
    gloo on CPU, NCCL when CUDA is available."""
    if ep_size < 1:
        raise ValueError(f"ep_size must be >= 1, got {ep_size}")
    if "WORLD_SIZE" not in os.environ:
        if ep_size != 1:
            raise ValueError(f"ep_size={ep_size} needs a torchrun launch with a multiple of {ep_size} processes")
        return None
    world = int(os.environ["WORLD_SIZE"])
    if world % ep_size:
        raise ValueError(f"ep_size ({ep_size}) must divide the number of processes ({world})")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    backend = backend or ("nccl" if cuda else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timeout)
    if ep_size not in _MESHES:
        device = "cuda" if cuda else "cpu"
        if ep_size == 1:
            _MESHES[1] = Mesh(dp=init_device_mesh(device, (world,), mesh_dim_names=("dp",)))
        else:
            root = init_device_mesh(device, (world // ep_size, ep_size), mesh_dim_names=("dp_mod_ep", "ep"))
            # one root, so FSDP2 can compose its "dp_mod_ep" sharding with the experts' "ep" DTensors
            _MESHES[ep_size] = Mesh(dp=root._flatten("dp"), ep=root["ep"], dp_mod_ep=root["dp_mod_ep"])
    return _MESHES[ep_size]


def cleanup() -> None:
    """Forget the meshes and leave the process group (end of a job or test)."""
    _MESHES.clear()
    if D.initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------- parallelize
def parallelize(model: nn.Module, mesh: Mesh | None, *, activation_checkpointing: bool = False,
                mixed_precision: str | torch.dtype | None = None,
                reshard_after_forward: bool = True) -> nn.Module:
    """Apply EP (when the mesh has an "ep" dim > 1) -> activation checkpointing -> FSDP2, in place.

    mixed_precision: None (parameters compute in their stored dtype) or "bf16"/torch.bfloat16:
    FSDP2 all-gathers bf16 copies for compute and reduces gradients in fp32 (master weights stay
    fp32 in the optimiser); routers stay fp32 throughout. With mesh None (single process) only
    activation checkpointing applies. Returns the model (same object, now an FSDPModule)."""
    if isinstance(mixed_precision, str) and mixed_precision not in DTYPES:
        raise ValueError(f"mixed_precision must be one of {sorted(DTYPES)} or a torch dtype, got {mixed_precision!r}")
    model.activation_checkpointing = activation_checkpointing
    meta = any(p.is_meta for p in model.parameters())
    if mesh is None:
        if meta:
            raise ValueError("parallelize() without a mesh needs materialised weights (there is nothing to shard)")
        return model
    dp = mesh.dp
    device = torch.device("cuda", torch.cuda.current_device()) if dp.device_type == "cuda" else torch.device("cpu")
    if not meta:  # a built or loaded model: rank 0's values everywhere
        model.to(device)
        sync_from_rank0(model)
    param_dtype = DTYPES[mixed_precision] if isinstance(mixed_precision, str) else mixed_precision
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    fp32 = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)

    experts: list[nn.Module] = []
    if mesh.ep_size > 1:
        experts = apply_expert_parallel(model, mesh.ep)
    ignored: set[nn.Parameter] = set()
    for module in experts:
        if mesh.dp_mod_ep.size() > 1:
            fully_shard(module, mesh=mesh.dp_mod_ep, mp_policy=policy, reshard_after_forward=reshard_after_forward)
            module.set_gradient_divide_factor(float(dp.size()))
            if dp.device_type == "cpu":  # gloo has no PREMUL_SUM: reduce with SUM, then scale
                module.set_force_sum_reduction_for_comms(True)
        else:  # nothing to shard: keep the ep-sharded DTensors out of FSDP (their hook divides, below)
            ignored.update(module.parameters())

    if param_dtype not in (None, torch.float32):  # routers compute from fp32 weights: their own group
        for module in model.modules():
            if isinstance(module, Router):
                fully_shard(module, mesh=dp, mp_policy=fp32, reshard_after_forward=reshard_after_forward)
    blocks = list(model.model.layers) + (list(model.mtp.layers) if getattr(model, "mtp", None) is not None else [])
    for block in blocks:
        fully_shard(block, mesh=dp, mp_policy=policy, reshard_after_forward=reshard_after_forward,
                    ignored_params=ignored or None)
    if getattr(model, "mtp", None) is not None:
        fully_shard(model.mtp, mesh=dp, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    # the root keeps its parameters gathered after forward: backward starts with them (torchtitan)
    fully_shard(model, mesh=dp, mp_policy=policy, reshard_after_forward=False, ignored_params=ignored or None)
    if meta:  # storage for this rank's shards only; init_sharded() fills them
        model.to_empty(device=device)
    # after to_empty, which may replace Parameter objects (and so drop hooks on the old ones)
    for module in experts:
        if mesh.dp_mod_ep.size() == 1:
            for p in module.parameters():
                p.register_hook(lambda g, n=float(dp.size()): g / n)
    return model


@torch.no_grad()
def init_sharded(model: nn.Module, seed: int | None = None) -> None:
    """Initialise a model that was parallelized on the meta device: `init_weights` draws each tensor
    in full (one at a time, on the CPU, the same draws on every rank and in a single process) and each
    rank keeps its own shard, so the values equal a single-process init from the same RNG state while
    no rank ever holds more than its shards plus one full tensor."""
    def assign(t: torch.Tensor, full: torch.Tensor) -> None:
        if not isinstance(t, DTensor):
            t.copy_(full.to(t.dtype))
            return
        shape, offset = compute_local_shape_and_global_offset(t.shape, t.device_mesh, t.placements)
        piece = full[tuple(slice(o, o + n) for o, n in zip(offset, shape))]  # this rank's block
        t.to_local().copy_(piece.to(t.dtype))

    model.init_weights(seed, assign=assign)


@torch.no_grad()
def sync_from_rank0(model: nn.Module) -> None:
    """Broadcast every parameter and buffer from rank 0, so ranks agree whatever their init."""
    for t in list(model.parameters()) + list(model.buffers()):
        D.broadcast(t.data, src=0)


@torch.no_grad()
def buffers_in_sync(model: nn.Module, atol: float = 0.0) -> bool:
    """True if every buffer (the routers' e_score_correction_bias) is equal on all ranks."""
    ok = True
    for b in model.buffers():
        b = b.detach().float()
        hi, neg_lo = D.all_reduce_max(b.clone()), D.all_reduce_max(-b)  # max and -min over ranks
        ok &= bool((hi + neg_lo).abs().max() <= atol)
    return ok


# ---------------------------------------------------------------------------------- gradients
@torch.no_grad()
def clip_grad_norm_(parameters, max_norm: float) -> torch.Tensor:
    """Global gradient-norm clipping for plain, FSDP2 and EP parameters alike (torch's foreach clip
    cannot mix DTensors of different meshes). One all-reduce: each rank sums the squares of its
    local shards, divided by how many ranks hold the same values (replicated placements, ranks
    outside the tensor's mesh), so the world sum counts every element once. Returns the total norm
    before clipping (fp32 scalar, the same on every rank)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    n = D.world_size()
    squares = torch.zeros((), dtype=torch.float32, device=grads[0].device)
    for g in grads:
        if isinstance(g, DTensor):
            copies = n / g.device_mesh.size()
            for dim, placement in enumerate(g.placements):
                if placement.is_replicate():
                    copies *= g.device_mesh.size(dim)
            squares += g.to_local().float().pow(2).sum() / copies
        else:
            squares += g.float().pow(2).sum() / n
    total = D.all_reduce_sum(squares).sqrt()
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        (g.to_local() if isinstance(g, DTensor) else g).mul_(scale)  # in place on the shards
    return total


# ---------------------------------------------------------------------------------- checkpoints
def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded CPU state dict (parameters + persistent buffers) on rank 0; {} on other ranks.
    Collective: every rank must call it."""
    if not isinstance(model, FSDPModule) and not any(isinstance(p, DTensor) for p in model.parameters()):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()} if D.is_main() else {}
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_full_pretrained(model: nn.Module, path: str | Path, **kwargs) -> None:
    """Gather the model to rank 0 and write the HF folder there (`model.save_pretrained`, atomic
    files). Collective; ranks leave together after the write."""
    state = full_state_dict(model)
    if D.is_main():
        with torch.device("meta"):  # a plain twin without storage; the gathered tensors are assigned
            plain = KExaone(model.config)
        plain.load_state_dict(state, assign=True)
        plain.save_pretrained(path, **kwargs)
    D.barrier()
