"""MoE load balancing from outside the model: the aux-loss-free expert-bias update and its metrics.

DeepSeek-V3 §2.1.2 / Wang et al. arXiv 2408.15664 (reference §4.1). After every optimiser step,
with c_i the number of tokens routed to expert i in that step summed over micro-batches and
all-reduced over data-parallel ranks (so every rank applies the same update):
    b_i <- b_i + gamma * sign(mean_j c_j - c_i)          gamma = 1e-4 (K-EXAONE)
    b   <- b - mean(b)                                   re-centred: only differences matter for top-k
The bias (`Router.e_score_correction_bias`, an fp32 buffer) only changes *which* experts are
selected, never the gate weights; it takes no gradient and lives in the model, so it is saved with
the HF checkpoint. The complementary sequence-level balance loss (alpha = 1e-4) is the model's
own `loss()` term; the trainer only passes alpha.

Metrics (Wang et al.): MaxVio = (max_i c_i - mean c) / mean c per MoE layer, "batch" on one step's
loads and "global" on loads accumulated over a whole evaluation pass; dead experts = experts that
received no token. `freeze_router(model)` stops both router learning and bias updates (RL stage).

Loads come from training-mode forwards only: under activation checkpointing the recomputed
forward's loads are discarded by autograd, so nothing is counted twice.

    python -c "import torch; from kexa.train.balance import max_violation; print(max_violation(torch.tensor([[4., 0, 0, 0]])))"
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .dist import all_reduce_sum, distributed


@dataclass
class BalanceConfig:
    gamma: float = 1e-4  # expert-bias update speed (K-EXAONE; DeepSeek-V3 used 1e-3)
    alpha: float = 1e-4  # sequence-level balance-loss coefficient (K-EXAONE, DeepSeek-V3)
    mtp_weight: float = 0.05  # MTP loss weight (K-EXAONE)
    freeze_router: bool = False  # freeze router weights and biases (RL stage)


def routers(model: nn.Module) -> list[nn.Module]:
    """The MoE routers in layer order (row m of ModelOutput.expert_loads belongs to routers[m])."""
    base = getattr(model, "module", model)
    return [layer.mlp.gate for layer in base.model.layers if hasattr(layer.mlp, "gate")]


def freeze_router(model: nn.Module, frozen: bool = True) -> None:
    """Stop router learning (weights take no gradient); BiasBalancer also stops moving the biases."""
    for router in routers(model):
        router.weight.requires_grad_(not frozen)


def max_violation(loads: torch.Tensor) -> torch.Tensor:
    """MaxVio per layer: loads (M, E) token counts -> (M,) (max - mean) / mean; 0 for an empty layer."""
    loads = loads.float()
    mean = loads.mean(-1)
    return torch.where(mean > 0, (loads.max(-1).values - mean) / mean.clamp_min(1e-12), torch.zeros_like(mean))


def all_reduce_loads(loads: torch.Tensor) -> torch.Tensor:
    """Sum a (M, E) load tensor over data-parallel ranks (no-op in a single process)."""
    return all_reduce_sum(loads.clone()) if distributed() else loads


class BiasBalancer:
    """Applies the aux-loss-free update after each optimiser step and reports balance metrics."""

    def __init__(self, model: nn.Module, cfg: BalanceConfig):
        self.routers = routers(model)
        self.cfg = cfg
        if cfg.freeze_router:
            freeze_router(model)

    @property
    def active(self) -> bool:
        return bool(self.routers) and self.cfg.gamma > 0 and not self.cfg.freeze_router

    @torch.no_grad()
    def update(self, local_loads: torch.Tensor | None) -> dict[str, float]:
        """local_loads (M, E): this rank's token counts for the step. Returns the step's metrics."""
        if local_loads is None or not self.routers:
            return {}
        loads = all_reduce_loads(local_loads.detach().float())  # (M, E) global counts
        if self.active:
            for router, c in zip(self.routers, loads):
                b = router.e_score_correction_bias
                b.add_(torch.sign(c.mean() - c).to(b.device), alpha=self.cfg.gamma)
                b.sub_(b.mean())
        vio = max_violation(loads)
        return {"maxvio": float(vio.mean()), "maxvio_max": float(vio.max()),
                "maxvio_layers": [round(v, 4) for v in vio.tolist()], "dead_experts": int((loads == 0).sum())}


def load_histogram(loads: torch.Tensor) -> list[list[float]]:
    """Per-layer expert load shares (M, E) as plain lists, for metrics files and plots."""
    loads = loads.float()
    return (loads / loads.sum(-1, keepdim=True).clamp_min(1)).tolist()
