"""Grouped-query attention with QK-norm; sliding-window (RoPE) or global (NoPE) per layer.

K-EXAONE (reference §2): q/k/v projections -> per-head RMSNorm on q and k (one weight of size
head_dim shared by all heads) -> RoPE *only on sliding layers* (global layers carry no position
encoding, the report's "SWA-only RoPE") -> scaled dot-product attention with scale head_dim**-0.5.

Sliding window semantics (HF `sliding_window_overlay`): query i sees key j iff i - W < j <= i, i.e.
W keys including itself. Without a cache, sliding layers attend block by block: queries in a block
of S = max(W, 128) positions only see the keys [start - W + 1, end), so memory is O(T * (S + W))
instead of a dense T x T mask (a 32K x 32K boolean mask would be 1 GB). Global layers use SDPA's
causal kernel, which materialises no mask either.

KV cache protocol (implemented in `kexa.infer`): when `cache` is given, the layer calls
    k_all, v_all, mask = cache.update(layer_idx, k, v)
with k, v of shape (B, Hkv, T, D) (keys already rotated on sliding layers), and attends q to
k_all/v_all under `mask` (bool, broadcastable to (B, 1, T, Tk); True = visible; None = all visible).
The cache owns positions, ragged lengths and ring buffers; the model stays free of inference logic.

Document masking (packed SFT rows): `document_masks(document_ids, window)` turns per-token document
ids (B, T) into the two boolean masks (B, 1, T, T) a packed row needs — global: causal and the same
document; sliding: that and the window — built once per forward and handed to every layer. A token
then attends exactly as if its document ran alone (RoPE positions restart per document, see
transformer.py). The masks are dense O(T^2): SFT rows are a few thousand tokens; the mask-free paths
above stay the default for pre-training.

Shape legend: B batch, T query tokens, S keys, H query heads, K kv heads, D head_dim, C hidden.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .layers import RMSNorm, apply_rope

SLIDING_BLOCK = 128  # queries per block in block-sparse sliding attention (the block is max(window, this))


def sliding_window_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> torch.Tensor:
    """(Tq, Tk) bool: key j visible from query i iff i - window < j <= i."""
    diff = q_pos[:, None] - k_pos[None, :]
    return (diff >= 0) & (diff < window)


def document_masks(document_ids: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """document_ids (B, T) -> (global, sliding) bool masks (B, 1, T, T); True = visible.
    Query i sees key j iff j <= i and both belong to the same document (and, sliding, i - j < window)."""
    T = document_ids.shape[1]
    pos = torch.arange(T, device=document_ids.device)
    same_doc = document_ids[:, :, None] == document_ids[:, None, :]  # (B, T, T)
    causal = pos[:, None] >= pos[None, :]  # (T, T)
    full = (same_doc & causal)[:, None]  # (B, 1, T, T)
    return full, full & sliding_window_mask(pos, pos, window)


def sliding_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Causal sliding-window attention without a T x T mask. q (B,H,T,D), k/v (B,K,T,D)."""
    T = q.shape[2]
    block = max(window, SLIDING_BLOCK)
    pos = torch.arange(T, device=q.device)
    gqa = q.shape[1] != k.shape[1]
    out = []
    for start in range(0, T, block):
        end = min(start + block, T)
        k0 = max(0, start - window + 1)
        mask = sliding_window_mask(pos[start:end], pos[k0:end], window)  # (Tq, Tk), Tk <= block + W - 1
        out.append(F.scaled_dot_product_attention(q[:, :, start:end], k[:, :, k0:end], v[:, :, k0:end],
                                                  attn_mask=mask, enable_gqa=gqa))
    return out[0] if len(out) == 1 else torch.cat(out, dim=2)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int, sliding: bool):
        super().__init__()
        self.layer_idx = layer_idx
        self.sliding = sliding  # True: sliding window + RoPE; False: global, NoPE
        self.window = config.sliding_window
        self.n_heads, self.n_kv, self.head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        C = config.hidden_size
        self.q_proj = nn.Linear(C, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(C, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(C, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, C, bias=False)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, cache=None,
                doc_masks: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C); doc_masks: document_masks(...) of a packed row (no cache then)."""
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, T, self.n_heads, self.head_dim)).transpose(1, 2)  # (B, H, T, D)
        k = self.k_norm(self.k_proj(x).view(B, T, self.n_kv, self.head_dim)).transpose(1, 2)  # (B, K, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        if self.sliding:  # global layers are NoPE: no rotation at all (report §2.1, reference §2)
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        gqa = self.n_heads != self.n_kv
        if cache is not None:
            k, v, mask = cache.update(self.layer_idx, k, v)  # (B, K, S, D), mask (B|1, 1, T, S) or None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        elif doc_masks is not None:  # packed documents: causal within each document only
            mask = doc_masks[1] if self.sliding else doc_masks[0]  # (B, 1, T, T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        elif self.sliding and T > self.window:
            y = sliding_attention(q, k, v, self.window)
        else:  # global layer, or a sequence that fits in the window: plain causal
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))  # (B, T, C)
