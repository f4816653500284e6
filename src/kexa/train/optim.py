"""Optimisers: Muon for hidden matrices (2-D and stacked 3-D expert weights), AdamW for the rest.

Muon (Keller Jordan 2024; Moonlight arXiv 2502.16982; reference §2), per matrix parameter W:
    B_t = mu B_{t-1} + (1 - mu) g_t                 EMA momentum, mu = 0.95
    U_t = (1 - mu) g_t + mu B_t                     Nesterov input (U_t = B_t without Nesterov)
    O_t = NewtonSchulz5(U_t)                        quintic, (a, b, c) = (3.4445, -4.7750, 2.0315)
    W  <- W (1 - lr wd) - lr * 0.2 sqrt(max(A, B)) O_t
The 0.2 sqrt(max(A, B)) factor (Moonlight) matches the update RMS of AdamW, so a recipe reuses
AdamW's learning rate and weight decay for both groups. `torch.optim.Muon` rejects 3-D tensors,
hence this implementation: Newton-Schulz is batched over leading dimensions, so an expert stack
(E, out, in) is orthogonalised per expert (as KellerJordan/Muon, marin and Primus do) and the
shape factor uses the per-expert (out, in).

Fused matrices: the expert stack `gate_up_proj` (E, 2I, C) stores two weight matrices per expert,
gate rows then up rows (the official checkpoint keeps gate_proj and up_proj apart). Muon practice
orthogonalises each weight matrix on its own (as separate q/k/v), so a Muon param group may carry
`row_blocks` = n: the last-but-one dim holds n equal blocks, each its own matrix. The update
(E, 2I, C) is then viewed as (E, 2, I, C), orthogonalised as E*2 matrices (I, C), and scaled with
the per-block shape (I, C). `split_params` gives the hint; Muon itself knows no parameter names.
Besides being the per-matrix rule, this cuts Newton-Schulz FLOPs on nano's expert stacks ~2.4x
(two (I, C) problems instead of one (2I, C); their Gram matrices are I x I, not 2I x 2I).

Which parameters go where (issue 4; KellerJordan/Muon README): Muon takes every >= 2-D weight
inside the decoder blocks and the MTP block (attention q/k/v/o, dense SwiGLU, experts, shared
expert, MTP fc). AdamW takes embeddings, lm_head, norms, and the router weight: the router's rows
are per-expert scoring vectors whose relative scale decides routing, and orthogonalising them would
couple experts (the report does not say; reference §2.1 marks this UNCONFIRMED). No weight decay on
1-D parameters (norm gains).

Newton-Schulz dtype: bf16 on CUDA (the reference recipe), fp32 on CPU, where bf16 matmuls are
slower than fp32 and buy nothing.

FSDP2 (DTensor parameters), the choice made here: an update whose sharding touches only leading
(batch) dimensions, i.e. an expert stack sharded on dim 0 as `fully_shard` does, is orthogonalised
per shard with no communication, since each shard holds whole expert matrices (row blocks
included: they split a shard's rows, never across shards). A 2-D matrix sharded
by rows needs the whole matrix: it is gathered with `full_tensor()`, orthogonalised redundantly on
every rank (identical result everywhere) and re-sliced locally (`distribute_tensor(...,
src_data_rank=None)` makes no communication). This costs one all-gather per 2-D matrix per step;
the alternative (assigning whole matrices round-robin to ranks then broadcasting) saves compute at
K-EXAONE scale but needs bucketing logic that only pays off on GPUs.

    python -c "import torch; from kexa.train.optim import newton_schulz; \
x = newton_schulz(torch.randn(4, 32, 16)); print(torch.linalg.svdvals(x)[0])"
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

NS_COEFFS = (3.4445, -4.7750, 2.0315)


@dataclass
class OptimConfig:
    name: str = "muon"  # "muon" (Muon + AdamW for the rest) or "adamw" (AdamW everywhere, for comparison)
    lr: float = 3e-3
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping

    def __post_init__(self) -> None:
        if self.name not in ("muon", "adamw"):
            raise ValueError(f"optim.name must be 'muon' or 'adamw', got {self.name!r}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"bad optimiser settings: lr={self.lr}, weight_decay={self.weight_decay}, "
                             f"momentum={self.momentum}")
        if len(self.betas) != 2:
            raise ValueError(f"optim.betas must have two values, got {self.betas!r}")


def newton_schulz(G: torch.Tensor, steps: int = 5, eps: float = 1e-7, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Approximate the orthogonal polar factor U V^T of each matrix in G (..., A, B), batched over leading dims."""
    a, b, c = NS_COEFFS
    if dtype is None:
        dtype = torch.bfloat16 if G.is_cuda else torch.float32
    X = G.to(dtype)
    transposed = X.shape[-2] > X.shape[-1]
    if transposed:  # iterate on the wide orientation: A = X X^T is then the smaller Gram matrix
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)  # spectral norm <= Frobenius norm <= 1
    lead = X.shape[:-2]
    X = X.reshape(-1, *X.shape[-2:])  # (batch, min, max): each product below is one batched GEMM
    for _ in range(steps):
        A = torch.bmm(X, X.mT)  # (batch, min, min)
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b A + c A A, fused into the GEMM (1.6x on CPU)
        X = torch.baddbmm(X, B, X, beta=a)  # a X + B X
    X = X.reshape(*lead, *X.shape[-2:])
    if transposed:
        X = X.mT
    return X.to(G.dtype)


def newton_schulz_blocks(G: torch.Tensor, steps: int, row_blocks: int = 1) -> torch.Tensor:
    """Newton-Schulz with the rows of each matrix in G (..., n*A, B) taken as n separate (A, B) matrices."""
    if row_blocks == 1:
        return newton_schulz(G, steps)
    blocks = G.unflatten(-2, (row_blocks, G.shape[-2] // row_blocks))  # (..., n, A, B)
    return newton_schulz(blocks, steps).flatten(-3, -2)  # (..., n*A, B)


def orthogonalize(update: torch.Tensor, steps: int, row_blocks: int = 1) -> torch.Tensor:
    """Newton-Schulz on a plain tensor or an FSDP2 DTensor (see module docstring for the choice)."""
    try:
        from torch.distributed.tensor import DTensor, distribute_tensor
    except ImportError:  # torch without distributed support
        return newton_schulz_blocks(update, steps, row_blocks)
    if not isinstance(update, DTensor):
        return newton_schulz_blocks(update, steps, row_blocks)
    matrix_dims = {update.ndim - 2, update.ndim - 1}
    if not any(p.is_shard() and p.dim in matrix_dims for p in update.placements):
        # shards hold whole matrices (expert stacks): no communication
        local = newton_schulz_blocks(update.to_local(), steps, row_blocks)
        return DTensor.from_local(local, update.device_mesh, update.placements,
                                  shape=update.shape, stride=update.stride())
    full = newton_schulz_blocks(update.full_tensor(), steps, row_blocks)  # identical on every rank
    return distribute_tensor(full, update.device_mesh, update.placements, src_data_rank=None)


class Muon(torch.optim.Optimizer):
    """Muon for >= 2-D parameters (last two dims = one matrix; leading dims = a batch of matrices).

    Param-group option `row_blocks` (default 1): the last-but-one dim stacks that many equal
    blocks, each orthogonalised and scaled as its own matrix (fused gate/up expert stacks)."""

    def __init__(self, params, lr: float = 3e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = 5, row_blocks: int = 1):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      nesterov=nesterov, ns_steps=ns_steps, row_blocks=row_blocks))
        for group in self.param_groups:
            n = group["row_blocks"]
            for p in group["params"]:
                if p.ndim < 2:
                    raise ValueError(f"Muon needs parameters with >= 2 dims, got shape {tuple(p.shape)}")
                if n < 1 or p.shape[-2] % n:
                    raise ValueError(f"Muon row_blocks={n} must divide the rows of shape {tuple(p.shape)}")

    @staticmethod
    def update_scale(shape: torch.Size, row_blocks: int = 1) -> float:
        """Moonlight's 0.2 sqrt(max(A, B)) of one matrix (A = rows / row_blocks): update RMS ~
        AdamW's, so AdamW's lr is reused."""
        return 0.2 * math.sqrt(max(shape[-2] // row_blocks, shape[-1]))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, mu, blocks = group["lr"], group["weight_decay"], group["momentum"], group["row_blocks"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                buf.lerp_(g, 1 - mu)  # B = mu B + (1 - mu) g
                update = g.lerp(buf, mu) if group["nesterov"] else buf  # (1 - mu) g + mu B
                o = orthogonalize(update, group["ns_steps"], blocks)
                p.mul_(1 - lr * wd)  # decoupled decay with the unscaled lr (as torch.optim.Muon)
                p.add_(o.to(p.dtype), alpha=-lr * self.update_scale(p.shape, blocks))
        return loss


# fused parameters -> how many separate matrices their rows stack (Muon's `row_blocks`):
# the expert stack (E, 2I, C) holds gate rows then up rows (model/moe.py `Experts`, HF layout)
FUSED_ROW_BLOCKS = {".experts.gate_up_proj": 2}


def split_params(model: nn.Module) -> tuple[list[dict], list[nn.Parameter], list[nn.Parameter]]:
    """(muon param groups, adamw decayed, adamw not decayed) over trainable parameters, in model
    order. Muon groups are {"params": [...], "row_blocks": n}, one per distinct n (the split hint)."""
    muon: dict[int, list[nn.Parameter]] = {}
    decay, no_decay = [], []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:  # tied weights appear once
            continue
        seen.add(id(p))
        # LoRA factors (train/lora.py) go to AdamW: a rank-r factor is not a full weight matrix, and
        # orthogonalising it (all r singular values set equal) is not Muon's update; AdamW is LoRA practice
        hidden = (name.startswith(("model.layers.", "mtp.")) and ".gate.weight" not in name
                  and not name.endswith((".lora_A", ".lora_B")))
        if p.ndim >= 2 and hidden:
            blocks = next((n for suffix, n in FUSED_ROW_BLOCKS.items() if name.endswith(suffix)), 1)
            muon.setdefault(blocks, []).append(p)
        elif p.ndim >= 2:  # embeddings, lm_head, router
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": ps, "row_blocks": n} for n, ps in muon.items()], decay, no_decay


def build_optimizers(model: nn.Module, cfg: OptimConfig) -> list[torch.optim.Optimizer]:
    """The recipe's optimisers, all driven by one lr schedule (schedule.set_lr)."""
    muon, decay, no_decay = split_params(model)
    # fused: one kernel per parameter group instead of a chain of foreach ops (CPU and CUDA alike)
    adam_kw = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=True)
    if cfg.name == "adamw":
        decay, muon = [p for g in muon for p in g["params"]] + decay, []
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    optimizers: list[torch.optim.Optimizer] = [torch.optim.AdamW(groups, **adam_kw)]
    if muon:
        optimizers.insert(0, Muon(muon, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                                  nesterov=cfg.nesterov, ns_steps=cfg.ns_steps))
    return optimizers
