"""Fine-grained MoE: sigmoid router with a selection-only expert bias, dropless grouped experts,
one shared expert, and the sequence-level balance statistics the trainer needs.

Router, per token, in fp32 end to end (reference §3, DeepSeek-V3 §2.1.2):
    s = sigmoid(x W_r^T)                    affinities, (N, E)
    c = s + b                               b = e_score_correction_bias: used ONLY to choose experts;
                                            it takes no gradient and is moved by the trainer's
                                            aux-loss-free update (b_i += gamma * sign(mean load - load_i))
    (group-limited: keep topk_group groups by the sum of their top-2 c; a no-op for n_group = 1)
    idx = topk(c, k);  w = s[idx] / sum(s[idx]) * routed_scaling_factor   (un-biased scores weigh)
Experts are SwiGLU; their outputs are weighted, summed in fp32 and cast once (HF's grouped_mm
numerics). Dropless: every (token, expert) assignment is computed — tokens are sorted by expert and
each expert runs one matmul over all of its tokens (`torch._grouped_mm` when present, wrapped as a
custom op so torch.compile can trace around it, else one matmul per expert that received tokens).
There is no capacity factor and no Python loop over tokens. Under torch.autocast the MoE casts its
input to the autocast dtype at entry (autocast does not reach the grouped GEMM and the residual
stream is fp32), so the experts compute in bf16 from fp32 master weights; the router stays fp32.
With `train.fp8` the two expert GEMMs (and their backward) run in FP8 instead (fp8.py: torchao's
grouped FP8 GEMM on Hopper); the router and the shared expert's path through here are unchanged.

Sequence-level balance loss (DeepSeek-V3 eq. 17-20), per sequence of T tokens:
    f_i = E / (k T) * #tokens routed to i,   P_i = mean_t s_it / sum_j s_jt,   L = sum_i f_i P_i
averaged over sequences; equals 1 under perfect balance. The model's loss() multiplies it by alpha.

Shape legend: B batch, T tokens, N = B*T tokens, E experts, k experts per token, C hidden, I expert width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .fp8 import fp8_grouped_matmul
from .layers import SwiGLU

HAS_GROUPED_MM = hasattr(torch, "_grouped_mm")


class Router(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.top_k, self.n_experts = config.num_experts_per_tok, config.num_experts
        self.n_group, self.topk_group = config.n_group, config.topk_group
        self.norm_topk_prob, self.scale = config.norm_topk_prob, config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(config.num_experts, config.hidden_size))
        self.register_buffer("e_score_correction_bias", torch.zeros(config.num_experts))

    def _apply(self, fn, recurse=True):
        # Router weight and bias stay fp32 whatever the model dtype (HF `_keep_in_fp32_modules_strict`):
        # gamma = 1e-4 bias steps would vanish in bf16, and near-tie expert choices would flip.
        super()._apply(fn, recurse)
        if self.weight.dtype != torch.float32 and self.weight.is_floating_point():
            self.weight.data = self.weight.data.float()
        if self.e_score_correction_bias.dtype != torch.float32:
            self.e_score_correction_bias = self.e_score_correction_bias.float()
        return self

    def forward(self, x: torch.Tensor):
        """x (N, C) -> scores (N, E) fp32, topk_idx (N, k), topk_weight (N, k) fp32."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            scores = F.linear(x.float(), self.weight.float()).sigmoid()  # (N, E)
        choice = scores.detach() + self.e_score_correction_bias  # selection only: no gradient path
        if self.n_group > 1:
            N = x.shape[0]
            grouped = choice.view(N, self.n_group, -1)  # (N, G, E/G)
            group_score = grouped.topk(2, dim=-1).values.sum(-1)  # (N, G)
            keep = torch.zeros_like(group_score, dtype=torch.bool)
            keep.scatter_(1, group_score.topk(self.topk_group, dim=-1).indices, True)
            choice = grouped.masked_fill(~keep[..., None], float("-inf")).view(N, -1)
        idx = choice.topk(self.top_k, dim=-1, sorted=False).indices  # (N, k)
        w = scores.gather(1, idx)  # (N, k), un-biased affinities
        if self.norm_topk_prob:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        return scores, idx, w * self.scale


# `torch._grouped_mm` wrapped as custom ops: torch.compile treats them as opaque calls (its fake
# kernel for _grouped_mm accepts bf16 only, so tracing the raw op fails in fp32) and the backward
# below is two more grouped GEMMs, the formulas of _grouped_mm's own autograd.
@torch.library.custom_op("kexa::grouped_mm", mutates_args=())
def _grouped_mm_op(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """x (N, in) with rows sorted by expert, w (E, out, in), offsets (E,) cumulative row counts -> (N, out)."""
    return torch._grouped_mm(x, w.transpose(-2, -1), offs=offsets)


@_grouped_mm_op.register_fake
def _(x, w, offsets):
    return x.new_empty(x.shape[0], w.shape[1])


@torch.library.custom_op("kexa::grouped_mm_weight_grad", mutates_args=())
def _grouped_mm_weight_grad(grad: torch.Tensor, x: torch.Tensor, offsets: torch.Tensor, n_groups: int) -> torch.Tensor:
    """grad (N, out), x (N, in) -> (E, out, in): grad_e^T x_e for each expert's rows."""
    return torch._grouped_mm(grad.t(), x, offs=offsets)


@_grouped_mm_weight_grad.register_fake
def _(grad, x, offsets, n_groups):
    return grad.new_empty(n_groups, grad.shape[1], x.shape[1])


def _grouped_mm_setup(ctx, inputs, output):
    x, w, offsets = inputs
    ctx.save_for_backward(x, w, offsets)


def _grouped_mm_backward(ctx, grad):
    x, w, offsets = ctx.saved_tensors
    grad_x = _grouped_mm_op(grad, w.transpose(-2, -1), offsets)  # (N, in); a view, no weight copy
    return grad_x, _grouped_mm_weight_grad(grad, x, offsets, w.shape[0]), None


if HAS_GROUPED_MM:
    _grouped_mm_op.register_autograd(_grouped_mm_backward, setup_context=_grouped_mm_setup)


def grouped_matmul(x: torch.Tensor, w: torch.Tensor, counts: torch.Tensor, offsets: torch.Tensor,
                   fp8: str | None = None) -> torch.Tensor:
    """Rows of x sorted by expert; w (E, out, in). Returns x_e @ w_e^T for each expert's rows.
    `fp8`: an FP8 backend of fp8.py (set on Experts by `fp8.convert_experts`), else bf16/fp32 GEMMs."""
    if w.dtype != x.dtype:  # fp32 master weights, bf16 activations under autocast (cast at MoE entry)
        w = w.to(x.dtype)
    if fp8 is not None:
        return fp8_grouped_matmul(fp8, x, w, offsets)
    if HAS_GROUPED_MM and x.shape[0] > 0:
        return _grouped_mm_op(x, w, offsets)
    out = x.new_empty(x.shape[0], w.shape[1])
    start = 0
    for e, n in enumerate(counts.tolist()):  # fallback: one matmul per expert that has tokens
        if n:
            out[start:start + n] = x[start:start + n] @ w[e].T
        start += n
    return out


class Experts(nn.Module):
    """E routed SwiGLU experts stored as 3-D stacks (HF transformers-5 layout): gate rows, then up rows."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        E, C, I = config.num_experts, config.hidden_size, config.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * I, C))
        self.down_proj = nn.Parameter(torch.empty(E, C, I))
        self.fp8: str | None = None  # FP8 GEMM backend (fp8.convert_experts); None: the stored dtype's GEMMs

    def forward(self, x: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor):
        """x (N, C), idx/weight (N, k) -> (N, C) and the per-expert token counts (E,)."""
        N, k = idx.shape
        E = self.gate_up_proj.shape[0]
        if torch.compiler.is_compiling() and N * k <= E:  # a traced decode step
            return self._per_assignment(x, idx, weight)
        flat = idx.reshape(-1)  # (N*k,)
        order = flat.argsort(stable=True)  # assignments grouped by expert
        token = order // k  # token of each sorted assignment
        counts = expert_counts(flat, E)  # (E,)
        offsets = counts.cumsum(0).to(torch.int32)
        h = grouped_matmul(x[token], self.gate_up_proj, counts, offsets, self.fp8)  # (N*k, 2I)
        gate, up = h.chunk(2, dim=-1)
        y = grouped_matmul(F.silu(gate) * up, self.down_proj, counts, offsets, self.fp8)  # (N*k, C)
        y = y.float() * weight.reshape(-1)[order, None]  # fp32 weighting and sum, cast once
        out = torch.zeros(N, x.shape[1], dtype=torch.float32, device=x.device).index_add_(0, token, y)
        return out.to(x.dtype), counts

    def _per_assignment(self, x: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor):
        """The traced (torch.compile) form for decode steps, where N * k <= E: every
        (token, expert) assignment is a matrix-vector product written as multiply-and-sum over the
        gathered expert rows. Shapes are static (no sort, no per-expert split) and inductor fuses the
        gather into the reduction, so the k chosen experts' weights are read once and never copied.
        A grouped GEMM buys nothing at one row per expert; same FLOPs as the grouped form. Larger
        traced batches (compiled training blocks) take the grouped path."""
        E = self.gate_up_proj.shape[0]
        w_gate_up, w_down = self.gate_up_proj.to(x.dtype), self.down_proj.to(x.dtype)
        h = (w_gate_up[idx] * x[:, None, None, :]).sum(-1)  # (N, k, 2I, C) -> (N, k, 2I)
        gate, up = h.chunk(2, dim=-1)
        y = (w_down[idx] * (F.silu(gate) * up)[:, :, None, :]).sum(-1)  # (N, k, C, I) -> (N, k, C)
        out = (y.float() * weight[..., None]).sum(1)  # fp32 weighting and sum, cast once
        return out.to(x.dtype), expert_counts(idx.reshape(-1), E)


def expert_counts(flat_idx: torch.Tensor, n_experts: int) -> torch.Tensor:
    """(E,) assignments per expert; bincount's output length depends on the data, so it is not traceable."""
    return torch.zeros(n_experts, dtype=torch.long, device=flat_idx.device).index_add_(
        0, flat_idx, torch.ones_like(flat_idx))


class MoE(nn.Module):
    """Routed experts + shared expert (added without a gate)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate = Router(config)  # HF name: the router lives at `mlp.gate`
        self.experts = Experts(config)
        self.shared_experts = (SwiGLU(config.hidden_size, config.moe_intermediate_size * config.num_shared_experts)
                               if config.num_shared_experts else None)

    def forward(self, x: torch.Tensor, with_balance: bool = False):
        """x (B, T, C) -> out (B, T, C), expert loads (E,), balance term (scalar or None)."""
        B, T, C = x.shape
        if torch.is_autocast_enabled(x.device.type):
            # autocast covers nn.Linear but not the grouped expert GEMMs, which follow the activation
            # dtype; the residual stream is fp32, so cast once here: the experts (most of the FLOPs)
            # run in bf16 and the router still computes in fp32 (it casts to fp32 itself)
            x = x.to(torch.get_autocast_dtype(x.device.type))
        scores, idx, w = self.gate(x.reshape(-1, C))
        routed, loads = self.experts(x.reshape(-1, C), idx, w)
        out = routed.view(B, T, C)
        if self.shared_experts is not None:
            out = out + self.shared_experts(x)
        balance = sequence_balance_loss(scores, idx, B) if with_balance else None
        return out, loads, balance


def sequence_balance_loss(scores: torch.Tensor, idx: torch.Tensor, batch: int) -> torch.Tensor:
    """DeepSeek-V3 sequence-wise balance term: mean over sequences of sum_i f_i P_i (1.0 if balanced)."""
    N, E = scores.shape
    k = idx.shape[1]
    T = N // batch
    p = (scores / scores.sum(-1, keepdim=True)).view(batch, T, E).mean(1)  # (B, E)
    picked = torch.zeros_like(scores).scatter_(1, idx, 1.0).view(batch, T, E)
    f = picked.sum(1) * (E / (k * T))  # (B, E)
    return (f * p).sum(-1).mean()
