"""KV cache for K-EXAONE's hybrid attention: full history on global layers, a ring of `window` slots
on sliding layers, per-sequence lengths, and commit/discard so speculative steps can roll back.

Implements the protocol of `kexa.model.attention`: each attention layer calls
`k_all, v_all, mask = cache.update(layer_idx, k, v)`. The model does not know about positions,
ragged batches or rings; the engine brackets every forward with

    cache.begin(position_ids, rows)       # which batch rows (a slice) and absolute positions (b, T)
    model(ids, position_ids, cache=cache)
    cache.commit(n_keep)                  # keep the first n_keep[i] of the T new tokens of row i

Layout and choices
- Global (NoPE) layers: one preallocated (B, K, max_len, D) buffer per layer; position p lives in
  slot p, written during `update`. Rejected speculative tokens need no clean-up: a query at position
  q sees slots <= q only, and positions are contiguous, so a later step overwrites them before they
  can become visible.
- Sliding (RoPE) layers: a ring of exactly `window` slots per layer (position p in slot p % W).
  `update` attends over [ring, new keys] (W + T keys) and only *stashes* the new keys; `commit` then
  writes the last min(n_keep, W) kept tokens into the ring. A ring of exactly W slots therefore never
  holds a rejected draft and never loses a key a later query needs: rollback is simply not writing.
- Positions, not counters, drive the masks: each ring slot records the absolute position it holds
  (-1 = empty), so ragged rows, rollback and wrap-around all fall out of
  visible(q, p) = p <= q  (and q - p < W on sliding layers).
- Layer groups: the main layers (0..L-1) and the MTP layer (index L, reference §6) advance at
  different moments in speculative decoding, so each group keeps its own lengths and ring positions;
  the masks are built once per group and step, not once per layer.

Memory (`cache_bytes`): 2 (K and V) * B * K * D * bytes * (n_global * max_len + n_sliding * W) —
the analytic figure; at the real layout (36 sliding / 12 global, W = 128) and 256K tokens that is
~25% of a cache with full attention everywhere.

Shape legend: B batch rows of the cache, b rows in this step, K kv heads, T new tokens, D head_dim,
S keys visible to this step, W sliding window.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ModelConfig


def full_attention_cache_bytes(config: ModelConfig, seq_len: int, batch: int = 1,
                               dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of a cache that keeps every position on every main layer (the non-hybrid baseline)."""
    per_token = 2 * config.num_key_value_heads * config.head_dim * torch.empty((), dtype=dtype).element_size()
    return batch * per_token * seq_len * config.num_hidden_layers


@dataclass
class _Group:
    """Bookkeeping shared by the layers that advance together (the main stack, or the MTP layer)."""
    layers: list[int]
    lengths: torch.Tensor  # (B,) committed tokens per row
    ring_pos: torch.Tensor | None  # (B, W) absolute position held by each ring slot, -1 = empty


class KVCache:
    """Preallocated hybrid KV cache for `batch_size` rows of up to `max_len` positions each."""

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", include_mtp: bool | None = None):
        if batch_size < 1 or max_len < 1:
            raise ValueError(f"batch_size and max_len must be >= 1, got {batch_size}, {max_len}")
        self.config, self.batch_size, self.max_len = config, batch_size, max_len
        self.window = config.sliding_window
        self.dtype, self.device = dtype, torch.device(device)
        self.include_mtp = include_mtp = config.has_mtp if include_mtp is None else include_mtp
        L, K, D = config.num_hidden_layers, config.num_key_value_heads, config.head_dim
        self.sliding = [config.is_sliding(i) for i in range(L)]
        if include_mtp:
            self.sliding.append(config.mtp_layer_type == "sliding_attention")
        self.k, self.v = [], []
        for sliding in self.sliding:
            slots = self.window if sliding else max_len
            self.k.append(torch.zeros(batch_size, K, slots, D, dtype=dtype, device=self.device))
            self.v.append(torch.zeros(batch_size, K, slots, D, dtype=dtype, device=self.device))
        groups = [list(range(L))] + ([[L]] if include_mtp else [])
        self.groups = [self._new_group(g) for g in groups]
        self._group_of = {i: g for g in self.groups for i in g.layers}
        self._step: dict | None = None

    def _new_group(self, layers: list[int]) -> _Group:
        has_ring = any(self.sliding[i] for i in layers)
        ring = torch.full((self.batch_size, self.window), -1, dtype=torch.long, device=self.device) if has_ring else None
        return _Group(layers, torch.zeros(self.batch_size, dtype=torch.long, device=self.device), ring)

    # ------------------------------------------------------------------ accounting
    def cache_bytes(self) -> int:
        """Bytes held by the K/V buffers (constant: everything is preallocated)."""
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    @staticmethod
    def analytic_bytes(config: ModelConfig, seq_len: int, batch: int = 1, dtype: torch.dtype = torch.bfloat16,
                       include_mtp: bool = False) -> int:
        """The hybrid cache for `seq_len` tokens: global layers x seq_len + sliding layers x min(W, seq_len)."""
        per_token = 2 * config.num_key_value_heads * config.head_dim * torch.empty((), dtype=dtype).element_size()
        kinds = [config.is_sliding(i) for i in range(config.num_hidden_layers)]
        if include_mtp and config.has_mtp:
            kinds.append(config.mtp_layer_type == "sliding_attention")
        slots = sum(min(config.sliding_window, seq_len) if s else seq_len for s in kinds)
        return batch * per_token * slots

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) committed tokens per row in the main layers."""
        return self.groups[0].lengths

    # ------------------------------------------------------------------ step protocol
    def begin(self, position_ids: torch.Tensor, rows: slice | None = None) -> None:
        """Announce the next forward: rows of the cache it covers and their absolute positions (b, T).
        Positions of a row must continue its committed history (a rejected tail may be overwritten)."""
        rows = slice(0, self.batch_size) if rows is None else rows
        b = len(range(*rows.indices(self.batch_size)))
        if position_ids.dim() != 2 or position_ids.shape[0] != b:
            raise ValueError(f"position_ids must be ({b}, T) for rows {rows}, got {tuple(position_ids.shape)}")
        if int(position_ids.max()) >= self.max_len:
            raise ValueError(f"position {int(position_ids.max())} exceeds the cache capacity of {self.max_len}")
        self._step = {"pos": position_ids.to(self.device), "rows": rows, "masks": {}, "pending": {}}

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor):
        """Protocol call from attention layer `layer_idx`: k, v (b, K, T, D) -> (k_all, v_all, mask)."""
        step = self._step
        if step is None:
            raise RuntimeError("KVCache.update called outside begin()/commit(); the engine drives the cache")
        rows, pos = step["rows"], step["pos"]  # pos (b, T)
        group = self._group_of[layer_idx]
        if self.sliding[layer_idx]:
            step["pending"][layer_idx] = (k, v)
            mask = self._mask(group, True, k.shape[2])
            k_all = torch.cat([self.k[layer_idx][rows], k.to(self.dtype)], dim=2)  # (b, K, W + T, D)
            v_all = torch.cat([self.v[layer_idx][rows], v.to(self.dtype)], dim=2)
            return k_all, v_all, mask
        kbuf, vbuf = self.k[layer_idx][rows], self.v[layer_idx][rows]  # views (b, K, max_len, D)
        idx = pos[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])  # (b, K, T, D)
        kbuf.scatter_(2, idx, k.to(self.dtype))
        vbuf.scatter_(2, idx, v.to(self.dtype))
        step["pending"][layer_idx] = None
        mask = self._mask(group, False, k.shape[2])
        S = mask.shape[-1]
        return kbuf[:, :, :S], vbuf[:, :, :S], mask

    def _mask(self, group: _Group, sliding: bool, T: int) -> torch.Tensor:
        """(b, 1, T, S) bool, True = visible; built once per (group, kind) per step."""
        step = self._step
        key = (id(group), sliding)
        if key not in step["masks"]:
            q = step["pos"]  # (b, T)
            if sliding:
                k_pos = torch.cat([group.ring_pos[step["rows"]], q], dim=1)  # (b, W + T)
                diff = q[:, :, None] - k_pos[:, None, :]  # (b, T, W + T): small
                visible = (diff >= 0) & (diff < self.window) & (k_pos[:, None, :] >= 0)
            else:  # slot j holds position j: one bool compare, no (T, S) integer temporary at long context
                # slots 0..max position of this step; a compiled step attends over the whole buffer
                # instead, keeping its shapes static (the engine sizes a compiled cache in buckets)
                S = self.max_len if torch.compiler.is_compiling() else int(q.max()) + 1
                visible = torch.arange(S, device=self.device)[None, None, :] <= q[:, :, None]  # (b, T, S)
            step["masks"][key] = visible[:, None]  # (b, 1, T, S)
        return step["masks"][key]

    def commit(self, n_keep: torch.Tensor | int | None = None) -> None:
        """Keep the first n_keep[i] new tokens of each row of the step (default: all), drop the rest."""
        step, self._step = self._step, None
        if step is None:
            raise RuntimeError("KVCache.commit without begin()")
        pos, rows = step["pos"], step["rows"]
        b, T = pos.shape
        if n_keep is None:
            n_keep = torch.full((b,), T, dtype=torch.long, device=self.device)
        elif isinstance(n_keep, int):
            n_keep = torch.full((b,), n_keep, dtype=torch.long, device=self.device)
        n_keep = n_keep.to(self.device)
        if not torch.compiler.is_compiling() and ((n_keep < 0) | (n_keep > T)).any():  # (a host sync)
            raise ValueError(f"n_keep must lie in [0, {T}], got {n_keep.tolist()}")
        touched = [g for g in self.groups if any(i in step["pending"] for i in g.layers)]
        for g in touched:
            g.lengths[rows] = pos[:, 0] + n_keep  # positions continue the committed history
        rings = [g for g in touched if g.ring_pos is not None]
        if not rings:
            return
        t = torch.arange(T, device=self.device)
        # ring writes: the last min(n_keep, W) kept tokens of each row (earlier ones would be overwritten)
        write = (t[None] < n_keep[:, None]) & (t[None] >= n_keep[:, None] - self.window)  # (b, T)
        slots = pos % self.window  # (b, T)
        if T <= self.window:  # decode / verify: a row's slots are distinct -> masked scatter, no host sync
            for g in rings:
                ring_pos = g.ring_pos[rows]  # (b, W) view
                ring_pos.scatter_(1, slots, torch.where(write, pos, ring_pos.gather(1, slots)))
                for i in g.layers:
                    if step["pending"].get(i) is not None:
                        idx = slots[:, None, :, None].expand_as(step["pending"][i][0])  # (b, K, T, D)
                        for buf, new in zip((self.k[i][rows], self.v[i][rows]), step["pending"][i]):
                            kept = torch.where(write[:, None, :, None], new.to(self.dtype), buf.gather(2, idx))
                            buf.scatter_(2, idx, kept)
            return
        bi, ti = write.nonzero(as_tuple=True)  # long prefill chunk: only its last W tokens land
        ri, si = bi + (rows.start or 0), slots[bi, ti]
        for g in rings:
            g.ring_pos[ri, si] = pos[bi, ti]
            for i in g.layers:
                if step["pending"].get(i) is not None:
                    k, v = step["pending"][i]  # (b, K, T, D)
                    self.k[i][ri, :, si] = k[bi, :, ti].to(self.dtype)  # (n, K, D)
                    self.v[i][ri, :, si] = v[bi, :, ti].to(self.dtype)

    def reset(self, rows: slice | None = None) -> None:
        """Forget the history of `rows` (all by default); buffers stay allocated."""
        rows = slice(0, self.batch_size) if rows is None else rows
        for g in self.groups:
            g.lengths[rows] = 0
            if g.ring_pos is not None:
                g.ring_pos[rows] = -1
