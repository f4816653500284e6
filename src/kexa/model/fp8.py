"""FP8 grouped GEMMs for the routed experts: all three GEMMs (forward, input grad, weight grad) in e4m3.

The routed experts are most of an MoE model's FLOPs but are 3-D parameter stacks run by a grouped
GEMM, not nn.Linear, so torchao's `convert_to_float8_training` never sees them. This file gives
`moe.grouped_matmul` FP8 versions of its GEMM, chosen once per model by `convert_experts`:

    backend      where                                 what runs
    "torchao"    CUDA SM90+, torchao >= 0.18           torchao.prototype.moe_training's FP8 rowwise
                                                       grouped GEMM (torch._scaled_grouped_mm inside)
    "scaled_mm"  CUDA SM89+ (no grouped FP8 op there)  one torch._scaled_mm per expert, same scales
    "emulate"    anywhere (CPU tests)                  quantize -> dequantize -> fp32 GEMM per expert

Scaling recipe (torchao's FP8_ROWWISE for grouped GEMMs, `fp8_grouped_mm.py`): dynamic scales, one
per row of each operand along the GEMM's contraction dimension, rounded down to a power of two
(exact to apply; scale = 448 / amax). Per operand:
    forward  out = x @ w_e^T     x per token (over C_in),          w per (expert, out row) (over C_in)
    dgrad    dx  = g @ w_e       g per token (over C_out),         w per (expert, in column) (over C_out)
    wgrad    dw_e = g_e^T x_e    g and x per (expert, column) over that expert's tokens only
The high-precision x and w are saved for backward (torchao does the same) and re-quantized there.
The scales equal torchao's pure-torch reference quantizers bitwise (tests/test_fp8_experts.py).
The router, norms, embeddings, lm_head and the MTP projection are not touched (DeepSeek-V3's FP8
recipe keeps them in higher precision); the Linear layers are torchao Float8Linear (train/loop.py).

Hardware GEMMs need every contraction length to be a multiple of 16: the hidden and expert widths
must be (checked at conversion), and each expert's token group is padded with zero rows to a
multiple of 16 (`pad_groups`; zero rows change no scale and no gradient). The emulation does not
pad: padding changes nothing numerically, which tests/test_fp8_experts.py checks.

    python -m pytest -q tests/test_fp8_experts.py

Shape legend: M sorted (token, expert) rows, E experts, K contraction width, N output width.
"""

from __future__ import annotations

import torch
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448: e4m3 saturates here
EPS = 1e-12  # torchao's amax floor (an all-zero row gets a huge, harmless scale)
ALIGN = 16  # FP8 tensor-core GEMMs: contraction lengths and group starts in multiples of 16 elements
BACKENDS = ("torchao", "scaled_mm", "emulate")


class Fp8Unavailable(RuntimeError):
    """This machine cannot run FP8 expert GEMMs (the message says why in one line)."""


# ---------------------------------------------------------------------------- scales and casts
def scale_from_amax(amax: torch.Tensor) -> torch.Tensor:
    """torchao's `amax_to_scale` with power-of-two rounding: 448 / amax in float64, to fp32, rounded down."""
    scale = (FP8_MAX / amax.double().clamp_min(EPS)).float()
    return torch.exp2(torch.floor(torch.log2(scale)))


def to_fp8(t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """t * scale cast to e4m3, saturated at +-448 (as torchao's to_fp8_saturated)."""
    return (t.float() * scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)


def quantize_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., R, K) -> fp8 (..., R, K) contiguous, scales (..., R, 1): one scale per row, over the last dim."""
    scale = scale_from_amax(t.abs().amax(-1, keepdim=True).float())
    return to_fp8(t, scale).contiguous(), scale


def group_ids(offsets: torch.Tensor, rows: int) -> torch.Tensor:
    """(M,) expert of each sorted row, from the cumulative group ends `offsets` (E,); no host sync."""
    rows_idx = torch.arange(rows, device=offsets.device)
    # rows past the last group end (padding tail) are zeros: count them to the last expert
    return torch.searchsorted(offsets.long(), rows_idx, right=True).clamp_max(len(offsets) - 1)


def quantize_group_columns(t: torch.Tensor, gid: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """t (M, C) -> fp8 (M, C), scales (E, C): per expert, one scale per column over that expert's rows only
    (the weight-gradient GEMM contracts over tokens, so a scale may not mix experts)."""
    amax = t.new_zeros(n_groups, t.shape[1], dtype=torch.float32).scatter_reduce_(
        0, gid[:, None].expand(-1, t.shape[1]), t.abs().float(), "amax")  # (E, C)
    scale = scale_from_amax(amax)
    return to_fp8(t, scale[gid]), scale


# ---------------------------------------------------------------------------- GEMMs on fp8 operands
# Two shapes: "2d x 3d" out (M, N) = a (M, K) @ w_e^T with w (E, N, K) (forward and dgrad), and
# "wgrad" out (E, N, K) = g_e^T (N, M_e) @ a_e (M_e, K). Operands arrive quantized with their scales;
# the emulation dequantizes and multiplies in fp32, the hardware path calls torch._scaled_mm per expert.
def _spans(offsets: torch.Tensor):
    """(expert, start, end) of each non-empty group (one host sync: these paths loop in Python)."""
    start = 0
    for e, end in enumerate(offsets.tolist()):
        if end > start:
            yield e, start, end
        start = end


def _emulated_2d3d(a_q, a_s, w_q, w_s, offsets, out_dtype):
    a = a_q.float() / a_s  # (M, K)
    w = w_q.float() / w_s  # (E, N, K)
    out = a.new_zeros(a.shape[0], w.shape[1])  # (M, N); fp32 per expert (CUDA's grouped GEMM wants bf16)
    for e, s, t in _spans(offsets):
        out[s:t] = a[s:t] @ w[e].t()
    return out.to(out_dtype)


def _emulated_wgrad(g_q, g_s, a_q, a_s, offsets, gid, out_dtype):
    g = g_q.float() / g_s[gid]  # (M, N)
    a = a_q.float() / a_s[gid]  # (M, K)
    out = g.new_zeros(len(offsets), g.shape[1], a.shape[1])  # (E, N, K)
    for e, s, t in _spans(offsets):
        out[e] = g[s:t].t() @ a[s:t]
    return out.to(out_dtype)


def _mm_dtype(t: torch.Tensor, out_dtype: torch.dtype) -> torch.dtype:
    return torch.bfloat16 if t.is_cuda else out_dtype  # CUDA's rowwise-scaled kernels write bf16 only


def _scaled_mm_2d3d(a_q, a_s, w_q, w_s, offsets, out_dtype):
    mm_dtype = _mm_dtype(a_q, out_dtype)
    out = torch.zeros(a_q.shape[0], w_q.shape[1], dtype=mm_dtype, device=a_q.device)  # (M, N)
    for e, s, t in _spans(offsets):
        # mat2 must be column-major: w_q[e] (N, K) row-major, transposed -> (K, N) column-major
        out[s:t] = torch._scaled_mm(a_q[s:t], w_q[e].t(), scale_a=a_s[s:t].reciprocal(),
                                    scale_b=w_s[e].reciprocal().view(1, -1), out_dtype=mm_dtype,
                                    use_fast_accum=a_q.is_cuda)
    return out.to(out_dtype)


def _scaled_mm_wgrad(g_q, g_s, a_q, a_s, offsets, gid, out_dtype):
    E, N, K = len(offsets), g_q.shape[1], a_q.shape[1]
    mm_dtype = _mm_dtype(g_q, out_dtype)
    out = torch.zeros(E, N, K, dtype=mm_dtype, device=g_q.device)  # experts without tokens: zero gradient
    for e, s, t in _spans(offsets):
        out[e] = torch._scaled_mm(g_q[s:t].t().contiguous(), a_q[s:t].t().contiguous().t(),  # (N, n) @ (n, K)
                                  scale_a=g_s[e].reciprocal().view(-1, 1), scale_b=a_s[e].reciprocal().view(1, -1),
                                  out_dtype=mm_dtype, use_fast_accum=g_q.is_cuda)
    return out.to(out_dtype)


GEMMS = {"emulate": (_emulated_2d3d, _emulated_wgrad), "scaled_mm": (_scaled_mm_2d3d, _scaled_mm_wgrad)}


class _Fp8GroupedMM(torch.autograd.Function):
    """x (M, K) rows sorted by expert, w (E, N, K), offsets (E,) int32 group ends -> (M, N) in x's dtype."""

    @staticmethod
    def forward(ctx, x, w, offsets, backend: str):
        mm, _ = GEMMS[backend]
        x_q, x_s = quantize_rows(x)  # (M, K), (M, 1): per token
        w_q, w_s = quantize_rows(w)  # (E, N, K), (E, N, 1): per expert output row
        ctx.save_for_backward(x, w, offsets)
        ctx.backend = backend
        return mm(x_q, x_s, w_q, w_s, offsets, x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, w, offsets = ctx.saved_tensors
        mm, mm_wgrad = GEMMS[ctx.backend]
        grad = grad.contiguous()
        g_q, g_s = quantize_rows(grad)  # (M, N), (M, 1): per token
        wt_q, wt_s = quantize_rows(w.transpose(-2, -1))  # (E, K, N), (E, K, 1): per expert input column
        grad_x = mm(g_q, g_s, wt_q, wt_s, offsets, x.dtype)  # (M, K)
        gid = group_ids(offsets, x.shape[0])
        gc_q, gc_s = quantize_group_columns(grad, gid, w.shape[0])  # (M, N), (E, N)
        xc_q, xc_s = quantize_group_columns(x, gid, w.shape[0])  # (M, K), (E, K)
        grad_w = mm_wgrad(gc_q, gc_s, xc_q, xc_s, offsets, gid, w.dtype)  # (E, N, K)
        return grad_x, grad_w, None, None


# ---------------------------------------------------------------------------- token-group padding
def pad_groups(x: torch.Tensor, offsets: torch.Tensor, align: int = ALIGN):
    """Rows sorted by expert -> (x_pad (M + E*(align-1), K) with each group padded by zero rows to a multiple
    of `align`, padded group ends (E,) int32, dest (M,) the padded row of each row). The padded size is a
    static upper bound (no host sync); rows past the last group end are never read."""
    ends = offsets.long()
    counts = torch.diff(ends, prepend=ends.new_zeros(1))  # (E,)
    padded = (counts + align - 1) // align * align
    padded_ends = padded.cumsum(0)
    gid = group_ids(offsets, x.shape[0])  # (M,)
    dest = torch.arange(x.shape[0], device=x.device) - (ends - counts)[gid] + (padded_ends - padded)[gid]
    x_pad = x.new_zeros(x.shape[0] + len(offsets) * (align - 1), x.shape[1]).index_copy(0, dest, x)
    return x_pad, padded_ends.to(torch.int32), dest


def _padded(gemm):
    """Run `gemm(x, w, offsets)` on groups padded to multiples of 16 rows and drop the padding again."""
    def run(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        x_pad, padded_ends, dest = pad_groups(x, offsets)
        return gemm(x_pad, w, padded_ends)[dest]  # (M, N)
    return run


def _torchao_gemm(x, w, offsets):
    from torchao.prototype.moe_training import _to_fp8_rowwise_then_scaled_grouped_mm
    # B_t (E, K, N) must be column-major per expert: w (E, N, K) contiguous, transposed, is exactly that
    out = _to_fp8_rowwise_then_scaled_grouped_mm(x, w.transpose(-2, -1), offsets, out_dtype=torch.bfloat16,
                                                 float8_dtype=FP8, pad_token_groups_for_grouped_mm=False)
    return out.to(x.dtype)


GROUPED_MM = {
    "torchao": _padded(_torchao_gemm),
    "scaled_mm": _padded(lambda x, w, offsets: _Fp8GroupedMM.apply(x, w, offsets, "scaled_mm")),
    "emulate": lambda x, w, offsets: _Fp8GroupedMM.apply(x, w, offsets, "emulate"),
}


def fp8_grouped_matmul(backend: str, x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """x (M, K) rows sorted by expert, w (E, N, K), offsets (E,) int32 group ends -> x_e @ w_e^T (M, N)."""
    if x.shape[0] == 0:
        return x.new_zeros(0, w.shape[1]) + 0 * w.sum()  # keeps w in the graph (zero gradient)
    return GROUPED_MM[backend](x.contiguous(), w, offsets)


# ---------------------------------------------------------------------------- choosing and converting
def _capability(device: torch.device) -> tuple[int, int] | None:
    return torch.cuda.get_device_capability(device) if device.type == "cuda" else None


def _torchao_grouped_available() -> bool:
    try:
        from torchao.prototype.moe_training import _to_fp8_rowwise_then_scaled_grouped_mm  # noqa: F401
    except ImportError:
        return False
    return hasattr(torch, "_scaled_grouped_mm")


def select_backend(device: torch.device) -> str:
    """The best FP8 expert GEMM this device runs; Fp8Unavailable (one line) when there is none."""
    cap = _capability(device)
    if cap is None or cap < (8, 9):
        found = "no CUDA device" if cap is None else f"compute capability {cap}"
        raise Fp8Unavailable(f"FP8 expert GEMMs need an NVIDIA GPU with compute capability >= 8.9 "
                             f"(Ada/Hopper); found {found}")
    if cap >= (9, 0) and _torchao_grouped_available():
        return "torchao"
    return "scaled_mm"  # Ada has no FP8 grouped GEMM; the caller warns about the per-expert loop


def convert_experts(model: nn.Module, backend: str) -> int:
    """Route every `Experts` module's GEMMs through FP8 `backend`; returns how many were converted.
    Parameters are not touched (same dtype, class and state dict): the flag changes only the GEMM."""
    from .moe import Experts
    if backend not in BACKENDS:
        raise ValueError(f"FP8 expert backend must be one of {BACKENDS}, got {backend!r}")
    experts = [m for m in model.modules() if isinstance(m, Experts)]
    if backend != "emulate":
        for m in experts:
            E, two_i, C = m.gate_up_proj.shape
            if C % ALIGN or (two_i // 2) % ALIGN:
                raise Fp8Unavailable(f"FP8 expert GEMMs need hidden_size and moe_intermediate_size divisible by "
                                     f"{ALIGN}; got {C} and {two_i // 2}")
    for m in experts:
        m.fp8 = backend
    return len(experts)
