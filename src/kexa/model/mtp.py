"""The multi-token-prediction (MTP) block: one dense decoder layer that predicts token t+2.

DeepSeek-V3 NextN with K-EXAONE's tensor names (reference §6). For position t:
    h_t = main model's hidden state after the final norm (the tensor fed to lm_head)
    e   = embed_tokens(x_{t+1})                          (shared embedding, the *next* token)
    u   = fc( concat[ norm_emb(e), norm_hid(h_t) ] )     (embedding half first, no bias)
    u   = DecoderLayer(u)                                (dense SwiGLU; attention per mtp_layer_type)
    logits(x_{t+2}) = lm_head( norm(u) )                 (shared head)
Training adds 0.05 x its cross-entropy to the loss (report §3.1). At inference the block drafts
tokens for self-speculative decoding; its normed output becomes the next draft step's `h`.
The MTP layer's KV-cache slot is `config.num_hidden_layers` (one past the main layers).

Shape legend: B batch, T positions, C hidden.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .layers import RMSNorm


class MTPBlock(nn.Module):
    def __init__(self, config: ModelConfig, layer_cls):
        super().__init__()
        C = config.hidden_size
        self.pre_fc_norm_embedding = RMSNorm(C, config.rms_norm_eps)
        self.pre_fc_norm_hidden = RMSNorm(C, config.rms_norm_eps)
        self.fc = nn.Linear(2 * C, C, bias=False)
        sliding = config.mtp_layer_type == "sliding_attention"
        self.layers = nn.ModuleList([layer_cls(config, config.num_hidden_layers, sliding=sliding, moe=False)])
        self.norm = RMSNorm(C, config.rms_norm_eps)

    def forward(self, hidden: torch.Tensor, next_embeds: torch.Tensor, rope, cache=None, doc_masks=None) -> torch.Tensor:
        """hidden, next_embeds (B, T, C) -> MTP hidden state after its final norm (B, T, C)."""
        u = self.fc(torch.cat([self.pre_fc_norm_embedding(next_embeds), self.pre_fc_norm_hidden(hidden)], dim=-1))
        u, _, _ = self.layers[0](u, rope, cache, doc_masks=doc_masks)
        return self.norm(u)
