"""MTP self-speculative decoding: the MTP block drafts k tokens, the main model verifies them in one
forward, and standard speculative sampling keeps the output distribution exactly the model's.

One step, for every row at once (reference §6; Leviathan et al. 2023, Chen et al. 2023):
    state: main cache holds positions < L; x_L was emitted; the MTP block, run at position L-1 on
           (h_{L-1}, x_L), gave the draft distribution q_1 for x_{L+1}, a draft d_1 ~ q_1 and its
           normed output u_{L-1}.
    draft  (k = 2)  MTP(u_{L-1}, d_1) at position L -> q_2, d_2 ~ q_2. The single MTP layer is reused
                    with its own output as the next h (vLLM / TRT-LLM); this entry of the MTP cache is
                    provisional and is never committed.
    verify          main model on [x_L, d_1 .. d_k] at positions L .. L+k -> target p_0 .. p_k
                    (each with the same sampling transform as plain decoding) and hiddens h_L .. h_{L+k}.
    accept          d_i is kept with probability min(1, p_{i-1}(d_i) / q_i(d_i)) while all earlier
                    drafts were kept; after a accepted drafts, y ~ norm(max(0, p_a - q_{a+1})), or
                    y ~ p_k when every draft was kept (the bonus token). Greedy = one-hot p and q, so
                    this is "keep drafts while they equal the argmax" and greedy output equals plain
                    greedy decoding token for token.
    rollback        main cache keeps a + 1 of the k + 1 new positions (`KVCache.commit`).
    catch-up        MTP over positions L .. L+k with the true hiddens h and next tokens
                    [d_1 .. d_a, y, y ..]; positions <= L + a are exact (the layer is causal), the
                    MTP cache keeps a + 1 of them, and index a yields the next q_1, d_1, u.
So a step emits a + 1 tokens for one main forward of k + 1 tokens plus k small MTP forwards.

Per-row sampling (the continuous-batching scheduler, where every request has its own parameters,
penalties and seed): `params` may be a `ProbsFn` instead of one SamplingParams, and `generator` a list
of one torch.Generator per row. The acceptance rule is elementwise per row already; what changes is
only which transform makes each row's p and q and whose random numbers decide it, so every row stays
exact under its own parameters (greedy rows: one-hot p and q, plain greedy output).

Shape legend: b rows, k drafts, V vocabulary, C hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..model.layers import rope_cos_sin
from .cache import KVCache
from .sampling import SamplingParams, sample, token_probs


@dataclass
class DraftState:
    token: torch.Tensor  # (b,) last emitted token x_L, not yet in the main cache
    q: torch.Tensor  # (b, V) draft distribution for x_{L+1}
    draft: torch.Tensor  # (b,) d_1 ~ q
    mtp_hidden: torch.Tensor  # (b, 1, C) MTP output at position L - 1 (the h of draft step 2)


# The sampling transform of every row: (logits (b, V), tokens (b, n) that follow the state's last
# token x_L or None, how many of them are real (b,) or None = all) -> probabilities (b, V). The tokens
# matter for penalties (p_i of the verify sees the drafts d_1..d_{i-1}); past the real count a row
# repeats one of its real tokens, so set-like penalties may ignore the count, counting ones may not.
ProbsFn = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor | None], torch.Tensor]
Generators = torch.Generator | list[torch.Generator] | None


def with_tokens(seen: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor | None:
    """seen (b, V) plus tokens (b, n) -> new mask (None stays None: no penalty in use)."""
    if seen is None:
        return None
    return seen.clone().scatter_(1, tokens, True)


def as_probs(params: SamplingParams | ProbsFn, seen: torch.Tensor | None) -> ProbsFn:
    """One SamplingParams for every row (the engine) as a ProbsFn; a ProbsFn passes through."""
    if callable(params):
        return params

    def probs(logits, tokens=None, n_real=None):
        return token_probs(logits, params, seen if tokens is None else with_tokens(seen, tokens))
    return probs


def sample_rows(probs: torch.Tensor, generator: Generators) -> torch.Tensor:
    """probs (b, V) -> (b,) tokens, each row from its own generator when given a list."""
    if isinstance(generator, list):
        return torch.cat([sample(probs[i:i + 1], g) for i, g in enumerate(generator)])
    return sample(probs, generator)


def rand_rows(b: int, k: int, generator: Generators, device) -> torch.Tensor:
    """(b, k) uniforms in [0, 1), each row from its own generator when given a list."""
    if isinstance(generator, list):
        return torch.stack([torch.rand(k, generator=g, device=device) for g in generator])
    return torch.rand(b, k, generator=generator, device=device)


def mtp_draft(model, cache: KVCache, hidden: torch.Tensor, next_ids: torch.Tensor, position_ids: torch.Tensor,
              take: torch.Tensor, n_keep: torch.Tensor | int, params: SamplingParams | ProbsFn,
              seen: torch.Tensor | None, generator: Generators, rows: slice | None = None):
    """Run the MTP block over (b, T) positions, commit n_keep of them to its cache, and draft from
    index `take` (b,): returns q (b, V), draft (b,), MTP hidden at `take` (b, 1, C). With a ProbsFn,
    `seen` is unused (the function knows each row's history)."""
    # model.mtp + lm_head rather than model.mtp_forward: only row `take` needs logits, and the
    # (T - 1) x V logits mtp_forward would add cost as much as a quarter of a nano decode step each
    cfg = model.config
    rope = rope_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta, hidden.dtype)
    cache.begin(position_ids, rows)
    u = model.mtp(hidden, model.model.embed_tokens(next_ids), rope, cache)  # (b, T, C)
    cache.commit(n_keep)
    u_take = u[torch.arange(len(take), device=take.device), take][:, None]  # (b, 1, C)
    q = as_probs(params, seen)(model.lm_head(u_take)[:, 0], None, None)
    return q, sample_rows(q, generator), u_take


def accept_drafts(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, generator: Generators):
    """Speculative sampling. p (b, k+1, V) target, q (b, k, V) draft, drafts (b, k) ->
    accepted count a (b,) and the token after the accepted drafts (b,). Every operation is per row,
    so rows may come from different sampling transforms and generators."""
    b, k = drafts.shape
    p_d = p[:, :k].gather(2, drafts[..., None]).squeeze(-1)  # (b, k) target prob of each draft
    q_d = q.gather(2, drafts[..., None]).squeeze(-1)  # (b, k) draft prob (> 0: it was sampled)
    r = rand_rows(b, k, generator, p.device)
    ok = r * q_d < p_d  # u < p/q without dividing
    a = ok.long().cumprod(1).sum(1)  # (b,) leading accepted drafts
    ar = torch.arange(b, device=p.device)
    target = p[ar, a]  # (b, V): p_a
    q_pad = torch.cat([q, torch.zeros_like(q[:, :1])], dim=1)  # (b, k+1, V): no draft after the last
    residual = (target - q_pad[ar, a]).clamp_min(0)
    mass = residual.sum(-1, keepdim=True)
    # mass 0 only when p_a == q_{a+1} exactly, where rejection has probability 0; fall back to p_a
    dist = torch.where(mass > 0, residual / mass.clamp_min(1e-30), target)
    return a, sample_rows(dist, generator)


def speculative_step(model, cache: KVCache, state: DraftState, k: int, params: SamplingParams | ProbsFn,
                     seen: torch.Tensor | None, generator: Generators, active: torch.Tensor,
                     rows: slice | None = None):
    """One draft-verify-accept step for all rows (or the cache rows `rows`). Returns new tokens
    (b, k+1) of which the first n_new (b,) are valid (accepted drafts, then the corrected/bonus
    token), the accepted count, the next DraftState and the verify logits (b, k+1, V) (logits[:, i]
    is the raw model distribution of new[:, i]). Rows with active False commit nothing to the cache."""
    probs = as_probs(params, seen)
    L = cache.lengths[rows if rows is not None else slice(None)].clone()  # (b,)
    drafts, qs = [state.draft], [state.q]
    if k == 2:
        pos = L[:, None]
        d1 = state.draft[:, None]
        q2, d2, _ = mtp_draft(model, cache, state.mtp_hidden, d1, pos, torch.zeros_like(L), 0,
                              lambda x, *_: probs(x, d1, None), None, generator, rows)
        drafts.append(d2)
        qs.append(q2)
    drafts_t = torch.stack(drafts, 1)  # (b, k)
    ids = torch.cat([state.token[:, None], drafts_t], dim=1)  # (b, k+1)
    pos = L[:, None] + torch.arange(k + 1, device=L.device)  # (b, k+1)
    cache.begin(pos, rows)
    out = model(ids, pos, cache=cache, return_hidden=True)
    p = torch.stack([probs(out.logits[:, i], drafts_t[:, :i] if i else None, None)
                     for i in range(k + 1)], dim=1)  # (b, k+1, V)
    a, y = accept_drafts(p, torch.stack(qs, 1), drafts_t, generator)
    keep = torch.where(active, a + 1, 0)
    cache.commit(keep)

    t = torch.arange(k + 1, device=L.device)
    padded = torch.cat([drafts_t, y[:, None]], dim=1)  # (b, k+1)
    new = torch.where(t[None] < a[:, None], padded, y[:, None])  # d_1..d_a, then y repeated
    q1, d1, u = mtp_draft(model, cache, out.hidden_states, new, pos, a, keep,
                          lambda x, *_: probs(x, new, a + 1), None, generator, rows)
    return new, a + 1, a, DraftState(token=y, q=q1, draft=d1, mtp_hidden=u), out.logits
