"""The K-EXAONE decoder: pre-norm blocks in the LLLG pattern, a dense first layer then MoE, MTP.

    x = embed_tokens(ids)                                  (no sqrt(d) scaling)
    for each layer:  h = x + o_proj(Attn(input_layernorm(x)))
                     x = h + MLP(post_attention_layernorm(h))   (SwiGLU on dense layers, MoE otherwise)
    logits = lm_head(norm(x));   mtp_logits = MTP(norm(x)[:, :-1], ids[:, 1:])

Packed rows (SFT): `document_ids` (B, T) marks which document each token belongs to; attention
never crosses documents and RoPE positions restart at 0 in each document (unless `position_ids` are
given), so every document is computed as if it ran alone (tests/test_sft_pack.py pins this).

Module and parameter names are those of HF `ExaoneMoeForCausalLM` (plus `mtp.*` as in the official
checkpoint), so the HF adapter in `hf.py` only renames the router bias and (un)fuses experts.

    python -c "import torch; from kexa import KExaone, ModelConfig; \
m = KExaone(ModelConfig.preset('tiny')); print(m(torch.randint(0, 512, (2, 40))).logits.shape)"

Shape legend: B batch, T tokens, C hidden, V vocabulary, E experts, M MoE layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import ModelConfig
from .attention import Attention, document_masks
from .layers import RMSNorm, SwiGLU, rope_cos_sin
from .moe import MoE, Experts, Router
from .mtp import MTPBlock


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, T, V), or (B, num_logits_to_keep, V)
    mtp_logits: torch.Tensor | None = None  # (B, T-1, V): position t predicts token t+2
    hidden_states: torch.Tensor | None = None  # (B, T, C) after the final norm (input of lm_head / MTP)
    expert_loads: torch.Tensor | None = None  # (M, E) tokens routed to each expert in each MoE layer
    balance_loss: torch.Tensor | None = None  # sum over MoE layers of the sequence-level balance term


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int, sliding: bool, moe: bool):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx, sliding)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MoE(config) if moe else SwiGLU(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor, rope, cache=None, with_balance: bool = False, doc_masks=None):
        x = x + self.self_attn(self.input_layernorm(x), rope, cache, doc_masks)
        h = self.post_attention_layernorm(x)
        if isinstance(self.mlp, MoE):
            out, loads, balance = self.mlp(h, with_balance)
            return x + out, loads, balance
        return x + self.mlp(h), None, None


class Backbone(nn.Module):
    """HF `ExaoneMoeModel`: embeddings, decoder layers, final norm."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i, config.is_sliding(i), config.is_moe(i))
                                    for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class KExaone(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.model = Backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.mtp = MTPBlock(config, DecoderLayer) if config.has_mtp else None
        self.activation_checkpointing = False
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Scaled-normal init for training from scratch (GPT-2 / Megatron style):
        every matrix ~ N(0, initializer_range); the projections that write into the residual stream
        (o_proj, down_proj, experts.down_proj) get std / sqrt(2 * n_layers) so the residual variance
        stays O(1) with depth; norms = 1; expert bias = 0."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.config.initializer_range
        out_std = std / math.sqrt(2 * (self.config.num_hidden_layers + self.config.num_nextn_predict_layers))

        def normal_(t: torch.Tensor, s: float) -> None:
            t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float32).mul_(s).to(t.dtype))

        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                if module is self.lm_head and self.config.tie_word_embeddings:
                    continue
                normal_(module.weight, out_std if name.endswith(("o_proj", "down_proj")) else std)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
            elif isinstance(module, Router):
                normal_(module.weight, std)
                module.e_score_correction_bias.zero_()
            elif isinstance(module, Experts):
                normal_(module.gate_up_proj, std)
                normal_(module.down_proj, out_std)

    def compile_blocks(self) -> None:
        """torch.compile every decoder block on its own, torchtitan's regional recipe: blocks of one
        kind (dense / MoE x sliding / global) share a trace, so compilation costs a few traces, not
        one per layer. Inductor fuses the norms, RoPE, SwiGLU gating and routing arithmetic around
        the GEMMs, forward and backward (the grouped expert GEMMs are opaque custom ops, moe.py).
        Embeddings, head, loss and the MTP block (one layer, on T-1 tokens: another trace for
        little gain) stay eager. Used by `train.compile`."""
        for layer in self.model.layers:
            layer.compile()

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None, cache=None,
                num_logits_to_keep: int = 0, compute_mtp: bool | None = None,
                return_hidden: bool = False, document_ids: torch.Tensor | None = None) -> ModelOutput:
        """input_ids (B, T) -> ModelOutput. `cache` follows the protocol in attention.py;
        `position_ids` (B, T) default to 0..T-1 (with `document_ids`: 0.. within each document);
        `document_ids` (B, T) confine attention to each packed document (not with a cache).
        MTP logits are computed by default when the model has an MTP block and no cache is used."""
        cfg = self.config
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if T == 0:
            raise ValueError("input_ids has no tokens")
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
        if not torch.compiler.is_compiling():  # a host sync; a compiled decode step's ids come from the sampler
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= cfg.vocab_size:
                raise ValueError(f"token ids must lie in [0, {cfg.vocab_size}), got min {lo} max {hi}")
        doc_masks = None
        if document_ids is not None:
            if cache is not None:
                raise ValueError("document_ids (packed training rows) cannot be combined with a KV cache")
            if document_ids.shape != input_ids.shape:
                raise ValueError(f"document_ids shape {tuple(document_ids.shape)} != input_ids {tuple(input_ids.shape)}")
            doc_masks = document_masks(document_ids, cfg.sliding_window)  # 2 x (B, 1, T, T)
            if position_ids is None:
                position_ids = positions_in_documents(document_ids)
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)

        x = self.model.embed_tokens(input_ids)  # (B, T, C)
        rope = rope_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta, x.dtype)
        with_balance = self.training and torch.is_grad_enabled()
        loads, balances = [], []
        for layer in self.model.layers:
            if self.activation_checkpointing and self.training and cache is None:
                x, load, bal = checkpoint(layer, x, rope, None, with_balance, doc_masks, use_reentrant=False)
            else:
                x, load, bal = layer(x, rope, cache, with_balance, doc_masks)
            if load is not None:
                loads.append(load)
                if bal is not None:
                    balances.append(bal)
        h = self.model.norm(x)  # (B, T, C)
        logits = self.lm_head(h[:, -num_logits_to_keep:] if num_logits_to_keep else h)

        mtp_logits = None
        if compute_mtp is None:
            compute_mtp = self.mtp is not None and cache is None
        if compute_mtp and T > 1:
            # MTP position t pairs h_t with token t+1; it attends within h_t's document (its target, token
            # t+2, is masked by the data when it lies in the next document)
            mtp_doc = None if document_ids is None else document_ids[:, :-1]
            mtp_logits, _ = self.mtp_forward(h[:, :-1], input_ids[:, 1:], position_ids[:, :-1], document_ids=mtp_doc)
        return ModelOutput(
            logits=logits, mtp_logits=mtp_logits, hidden_states=h if return_hidden else None,
            expert_loads=torch.stack(loads) if loads else None,
            balance_loss=torch.stack(balances).sum() if balances else None)

    def mtp_forward(self, hidden: torch.Tensor, next_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                    cache=None, document_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One MTP step. hidden (B, T, C) = main (or previous MTP) normed hidden at positions t;
        next_ids (B, T) = tokens t+1. Returns logits for tokens t+2 (B, T, V) and the MTP hidden."""
        if self.mtp is None:
            raise RuntimeError("this model has no MTP block (config.num_nextn_predict_layers = 0)")
        B, T = next_ids.shape
        if position_ids is None:
            position_ids = torch.arange(T, device=next_ids.device).expand(B, T)
        rope = rope_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta, hidden.dtype)
        doc_masks = None if document_ids is None else document_masks(document_ids, self.config.sliding_window)
        u = self.mtp(hidden, self.model.embed_tokens(next_ids), rope, cache, doc_masks)
        return self.lm_head(u), u

    # ------------------------------------------------------------------ loss
    def loss(self, out: ModelOutput, labels: torch.Tensor, ignore_index: int = -100,
             mtp_weight: float | None = None, balance_coef: float | None = None):
        """CE + mtp_weight * MTP CE + balance_coef * balance (defaults from the config: 0.05, 1e-4).
        labels (B, T) are the next tokens of input_ids (labels[:, t] = x_{t+1}); MTP targets are
        labels[:, 1:]. Returns (total, {"ce", "mtp", "balance"} as detached floats)."""
        mtp_weight = self.config.mtp_loss_weight if mtp_weight is None else mtp_weight
        balance_coef = self.config.balance_loss_coef if balance_coef is None else balance_coef
        ce = cross_entropy(out.logits, labels, ignore_index)
        total, parts = ce, {"ce": ce.detach()}
        if out.mtp_logits is not None and mtp_weight > 0:
            mtp = cross_entropy(out.mtp_logits, labels[:, 1:], ignore_index)
            total, parts["mtp"] = total + mtp_weight * mtp, mtp.detach()
        if out.balance_loss is not None and balance_coef > 0:
            total, parts["balance"] = total + balance_coef * out.balance_loss, out.balance_loss.detach()
        return total, parts

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"):
        from .hf import load_pretrained
        return load_pretrained(cls, path, dtype=dtype, device=device)

    def save_pretrained(self, path: str | Path, max_shard_bytes: int = 5 * 2**30, per_expert: bool = True) -> None:
        """Write config.json + safetensors in the official layout (per_expert=False: fused 3-D experts)."""
        from .hf import save_pretrained
        save_pretrained(self, path, max_shard_bytes=max_shard_bytes, per_expert=per_expert)


def positions_in_documents(document_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) document ids (equal ids are contiguous) -> (B, T) position of each token within its document."""
    B, T = document_ids.shape
    idx = torch.arange(T, device=document_ids.device).expand(B, T)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]  # a token that opens a document
    start_idx = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values  # (B, T) its document's start
    return idx - start_idx


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean token CE in fp32 over non-ignored labels; 0 (with grad) when every label is ignored."""
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match logits {tuple(logits.shape[:-1])}")
    flat_logits, flat_labels = logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1)
    if not (flat_labels != ignore_index).any():
        return flat_logits.sum() * 0.0
    return F.cross_entropy(flat_logits, flat_labels, ignore_index=ignore_index)
