"""Continuous batching over `Engine`: requests join and leave the running batch between decode steps.

    sched = Scheduler(engine, max_batch=16)
    sched.start()                                        # one background thread owns the model
    req = sched.submit(Request(prompt_ids, SamplingParams(max_new_tokens=64)), on_event=print)
    ...                                                  # Event(tokens=[...], logprobs=..., finish_reason=...)
    sched.cancel(req); sched.stop()

Design (vLLM / SGLang's scheduler, at kexa's size)
- Slots: one `KVCache` of `max_batch` rows is allocated once; a request owns one row (its slot) from
  admission to finish. The hybrid layout is the cache's own: global layers keep the row's whole history,
  sliding layers a ring of W slots, so a slot costs `KVCache.analytic_bytes(context)` at most.
  `cache.reset(row)` frees a slot at once (cancellation, finish): no copy, no compaction.
- One step = one decode forward for every row that has a pending token (all decoding rows together,
  each at its own position; rows that are not decoding ride along and commit nothing — the cache's
  `commit(keep)` protocol), then one prefill forward for the next chunks of admitted prompts under the
  rest of the per-step token budget (`step_tokens`; Sarathi-Serve's chunked prefill). Chunks of
  different lengths share that forward padded to the longest, and `commit(n)` keeps each row's real
  tokens only. A long prompt therefore never stalls the streams already running for more than one
  chunk, a burst of new requests is prefilled together, and a request that finished its prefill
  decodes in the very next step.
- Sampling is per request (params, seed, penalties differ per row) through `sampling.token_probs`, the
  transform the engine uses; greedy rows take the argmax, so a request's greedy output equals
  `Engine.generate` on its prompt token for token (tests pin it).
- Penalties: OpenAI's presence/frequency penalties act on the request's generated tokens
  (logit - presence * [count > 0] - frequency * count, as vLLM does), the repetition penalty on prompt
  and output (CTRL, `sampling.py`).
- Logprobs are those of the raw model distribution (log_softmax of the logits, vLLM's default), for
  generated tokens and, on request, for every prompt token (what `/v1/completions` echo needs).
- `compile`: with `Engine(compile=True)` the decode forward is the engine's compiled step; its trace
  needs static shapes, so it always runs all `max_batch` rows over a cache sized in powers of two.
  Without it the decode forward runs rows 0..highest busy slot only (slots are handed out lowest first).
- Bounded waiting queue: `submit` raises `QueueFull` when `max_waiting` requests already wait.
- MTP self-speculation (`speculative=K`, reference §6): the decode forward becomes one
  `speculative_step` over the same rows: verify [x_L, d_1..d_K] for every decoding row, accept per row
  under the row's own transform (`_row_probs`: its temperature/top-p/top-k, repetition penalty, and
  presence/frequency penalties counting the drafts before each position) and its own generator, so the
  exact acceptance rule holds per request and greedy rows emit exactly plain greedy output. Each
  request keeps its DraftState (x_L, q_1, d_1, MTP hidden) between steps; prefill catches the MTP
  cache up on every chunk and drafts d_1 when the prompt ends. Per-request drafted/accepted counts
  add up to the scheduler's totals (the `kexa:spec_decode_*` metrics). Speculative steps are eager
  (the compiled step is the plain one), so `compile` and `speculative` do not combine.

All model work happens on the scheduler thread; `submit`/`cancel` are thread-safe and `on_event` is
called from the scheduler thread (the HTTP layer forwards it to its event loop).

Shape legend: b rows of the decode forward, V vocabulary.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch

from .cache import KVCache
from .engine import Engine, GenerationError
from .sampling import SamplingParams, token_probs
from .speculative import DraftState, mtp_draft, speculative_step

_GREEDY = SamplingParams(max_new_tokens=1, temperature=0)  # rows that only ride along in a forward


class QueueFull(RuntimeError):
    """The waiting queue is at `max_waiting`: the caller should retry later (HTTP 503)."""


@dataclass
class TokenLogprob:
    token: int
    logprob: float
    top: list[tuple[int, float]]  # the top-n (token, logprob), best first


@dataclass
class Event:
    """What a request produced in one scheduler step."""
    tokens: list[int]
    logprobs: list[TokenLogprob] | None = None  # one per token when requested
    prompt_logprobs: list[TokenLogprob | None] | None = None  # once, with the first tokens (echo)
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
    error: str | None = None


@dataclass
class Request:
    prompt: list[int]
    params: SamplingParams
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None  # None = off, n >= 0 = chosen token plus top n
    prompt_logprobs: int | None = None  # None = off, n >= 0 = every prompt token plus top n
    # scheduler state ------------------------------------------------------------------------
    id: int = -1
    on_event: Callable[[Event], None] | None = None
    slot: int = -1
    prefilled: int = 0  # prompt tokens already in the cache
    pending: int | None = None  # sampled token not yet in the cache (the next decode input)
    output: list[int] = field(default_factory=list)  # tokens emitted so far
    prompt_lp: list[TokenLogprob | None] = field(default_factory=lambda: [None])  # position 0 has no context
    limit: int = 0  # prompt + max new tokens, capped at the context
    generator: torch.Generator | None = None
    seen: torch.Tensor | None = None  # (1, V) bool: prompt + output, for the repetition penalty
    counts: torch.Tensor | None = None  # (V,) output token counts, for presence/frequency penalties
    cancelled: bool = False
    finished: bool = False
    arrival: float = 0.0
    draft: DraftState | None = None  # speculation: x_L's draft state, one row
    drafted: int = 0  # speculation: draft tokens proposed for this request
    accepted: int = 0  # ... and accepted

    @property
    def decoding(self) -> bool:
        return self.pending is not None


class Scheduler:
    def __init__(self, engine: Engine, max_batch: int = 16, max_waiting: int = 256, step_tokens: int = 512,
                 max_len: int | None = None, speculative: int = 0):
        if max_batch < 1 or max_waiting < 0 or step_tokens < 1:
            raise ValueError(f"need max_batch >= 1, max_waiting >= 0, step_tokens >= 1; got {max_batch}, "
                             f"{max_waiting}, {step_tokens}")
        engine._validate([[0]], speculative)  # K in (0, 1, 2) and an MTP block when K > 0
        if speculative and engine.compiled:
            raise ValueError("speculative steps run eager (the compiled step is plain decoding): "
                             "use compile or speculative, not both")
        self.engine, self.model, self.config = engine, engine.model, engine.config
        self.max_batch, self.max_waiting, self.step_tokens = max_batch, max_waiting, step_tokens
        self.speculative = speculative
        self.context = min(max_len or self.config.max_position_embeddings, self.config.max_position_embeddings)
        # a verify step writes K positions past the last committed one (rejected drafts land there)
        cache_len = self.context + speculative
        if engine.compiled:  # the compiled step's static shapes: a power-of-two buffer (engine's rule)
            cache_len = max(256, 1 << (cache_len - 1).bit_length())
        self.cache = KVCache(self.config, max_batch, cache_len, dtype=engine.dtype, device=engine.device,
                             include_mtp=speculative > 0)
        self.spec_drafted = [0] * speculative  # per draft position: drafts proposed (request-steps)
        self.spec_accepted = [0] * speculative  # per draft position: drafts accepted
        self.spec_steps = 0  # request-steps verified (each proposes K drafts)
        self._spare = torch.Generator(device=engine.device)  # for rows that only ride along
        self.slots: list[Request | None] = [None] * max_batch
        self.waiting: deque[Request] = deque()
        self._lock = threading.Condition()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._running = False
        self.steps = 0  # scheduler steps run (for tests / metrics)
        self.last_error: str | None = None

    # ------------------------------------------------------------------ public, thread-safe
    def validate(self, req: Request) -> None:
        """Raise GenerationError (a 400 for the HTTP layer) for a request that can never run."""
        self.engine._validate([req.prompt], 0)
        need = len(req.prompt) + req.params.max_new_tokens
        if need > self.context:
            raise GenerationError(
                f"This model's maximum context length is {self.context} tokens. However, you requested {need} "
                f"tokens ({len(req.prompt)} in the prompt, {req.params.max_new_tokens} for the completion). "
                f"Please reduce the length of the prompt or the completion.")
        for name, value in (("presence_penalty", req.presence_penalty), ("frequency_penalty", req.frequency_penalty)):
            if not -2.0 <= value <= 2.0:
                raise GenerationError(f"{name} must lie in [-2, 2], got {value}")

    def submit(self, req: Request, on_event: Callable[[Event], None]) -> Request:
        self.validate(req)
        with self._lock:
            if len(self.waiting) >= self.max_waiting:
                raise QueueFull(f"the server is at capacity: {self.num_running} requests running and "
                                f"{len(self.waiting)} waiting (max_waiting={self.max_waiting}); retry later")
            req.id, req.on_event, req.arrival = next(self._ids), on_event, time.perf_counter()
            self.waiting.append(req)
            self._lock.notify()
        return req

    def cancel(self, req: Request) -> None:
        """Stop a request; its slot is freed before the next step (at once if the thread is idle)."""
        with self._lock:
            if req.finished:
                return
            req.cancelled = True
            if req in self.waiting:
                self.waiting.remove(req)
                self._finish(req, "cancelled")
            self._lock.notify()

    @property
    def num_running(self) -> int:
        return sum(r is not None for r in self.slots)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def kv_usage(self) -> float:
        """Fraction of the cache's token capacity held by running requests (global-layer positions)."""
        used = sum(min(r.prefilled + len(r.output), self.context) for r in self.slots if r is not None)
        return used / (self.max_batch * self.context)

    def start(self) -> "Scheduler":
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="kexa-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._running = False
            self._lock.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:  # whoever still waits learns that the server went away
            for req in list(self.waiting) + [r for r in self.slots if r is not None]:
                self._finish(req, "cancelled")
            self.waiting.clear()

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        while True:
            with self._lock:
                self._reap()
                self._admit()
                while self._running and self.num_running == 0:
                    self._lock.wait()
                    self._reap()
                    self._admit()
                if not self._running:
                    return
            try:
                self.step()
            except Exception as e:  # a bug must not hang every client: fail the running requests loudly
                self.last_error = f"{type(e).__name__}: {e}"
                with self._lock:
                    for req in [r for r in self.slots if r is not None]:
                        self._finish(req, "error", error=f"internal error in the scheduler: {self.last_error}")

    def _reap(self) -> None:
        for req in self.slots:
            if req is not None and req.cancelled:
                self._finish(req, "cancelled")

    def _admit(self) -> None:
        """Move waiting requests into free slots (lowest first, so the decode slice stays short)."""
        while self.waiting and None in self.slots:
            req = self.waiting.popleft()
            slot = self.slots.index(None)
            self.cache.reset(slice(slot, slot + 1))
            req.slot, self.slots[slot] = slot, req
            req.limit = len(req.prompt) + req.params.max_new_tokens
            dev, V = self.engine.device, self.config.vocab_size
            req.generator = torch.Generator(device=dev)
            if req.params.seed is not None:
                req.generator.manual_seed(req.params.seed)
            else:
                req.generator.seed()
            if req.params.uses_penalty:
                req.seen = torch.zeros(1, V, dtype=torch.bool, device=dev)
                req.seen[0, torch.tensor(req.prompt, device=dev)] = True
            if req.presence_penalty or req.frequency_penalty:
                req.counts = torch.zeros(V, device=dev)

    def _finish(self, req: Request, reason: str, tokens: list[int] | None = None,
                logprobs: list[TokenLogprob] | None = None, error: str | None = None, **extra) -> None:
        req.finished = True
        if req.slot >= 0 and self.slots[req.slot] is req:
            self.slots[req.slot] = None
            self.cache.reset(slice(req.slot, req.slot + 1))
        if req.on_event is not None:
            req.on_event(Event(tokens or [], logprobs, finish_reason=reason, error=error, **extra))

    @torch.inference_mode()
    def step(self) -> None:
        """One decode forward for the decoding rows, then prefill chunks under the remaining budget."""
        self.steps += 1
        decoding = [r for r in self.slots if r is not None and r.decoding and not r.cancelled]
        if decoding:
            (self._decode_speculative if self.speculative else self._decode)(decoding)
        budget, plan = self.step_tokens - len(decoding) * (1 + self.speculative), []
        for req in [r for r in self.slots if r is not None and not r.decoding and not r.cancelled]:
            if budget <= 0:
                break
            n = min(len(req.prompt) - req.prefilled, budget, self.engine.prefill_chunk)
            plan.append((req, n))
            budget -= n
        if plan:
            self._prefill(plan)

    def _decode(self, rows: list[Request]) -> None:
        dev = self.engine.device
        b = self.max_batch if self.engine.compiled else max(r.slot for r in rows) + 1
        token = torch.zeros(b, 1, dtype=torch.long, device=dev)  # (b, 1)
        keep = torch.zeros(b, dtype=torch.long, device=dev)  # (b,) 1 = commit this row's token
        for r in rows:
            token[r.slot, 0], keep[r.slot] = r.pending, 1
        pos = self.cache.lengths[:b, None].clone()  # (b, 1) each row at its own position
        self.cache.begin(pos, None if self.engine.compiled else slice(0, b))
        logits = self.engine._decode(token, pos, self.cache, keep)  # (b, V); commits the kept rows
        self._sample_and_emit(rows, logits[[r.slot for r in rows]])

    def _prefill(self, plan: list[tuple[Request, int]]) -> None:
        """One forward for the next chunk of several prompts: rows lo..hi of the cache, each chunk
        padded to the longest with its own positions; commit(n) keeps each row's real tokens only, so
        padding (and the rows outside the plan, which keep 0) never enters the cache. Prompts that
        finish here sample their first token."""
        dev = self.engine.device
        lo, hi = min(r.slot for r, _ in plan), max(r.slot for r, _ in plan) + 1
        T = max(n for _, n in plan)
        pos = self.cache.lengths[lo:hi, None] + torch.arange(T, device=dev)  # (b, T)
        if len(plan) > 1 and int(pos.max()) >= self.cache.max_len:  # padding would pass the cache's end
            for item in plan:
                self._prefill([item])
            return
        ids = torch.zeros(hi - lo, T, dtype=torch.long, device=dev)  # (b, T)
        keep = torch.zeros(hi - lo, dtype=torch.long, device=dev)  # (b,)
        for r, n in plan:
            ids[r.slot - lo, :n] = torch.tensor(r.prompt[r.prefilled:r.prefilled + n], device=dev)
            keep[r.slot - lo] = n
        want_all = any(r.prompt_logprobs is not None for r, _ in plan)
        self.cache.begin(pos, slice(lo, hi))
        out = self.model(ids, pos, cache=self.cache, num_logits_to_keep=0 if want_all else 1, return_hidden=True)
        self.cache.commit(keep)
        finishing = []
        for r, n in plan:
            i, s = r.slot - lo, r.prefilled
            r.prefilled = s + n
            if r.prompt_logprobs is not None:
                targets = r.prompt[s + 1:s + n + 1]  # the prompt tokens these positions predict
                if targets:
                    r.prompt_lp += _logprobs(out.logits[i, :len(targets)], targets, r.prompt_logprobs)
            if r.prefilled == len(r.prompt):
                finishing.append((r, i, n - 1))
        first: list[int] = []
        if finishing:
            rows = torch.tensor([i for _, i, _ in finishing], device=dev)
            last = torch.tensor([t for _, _, t in finishing], device=dev)
            logits = self.model.lm_head(out.hidden_states[rows, last]).float()  # (f, V) at each prompt's last token
            first = self._sample([r for r, _, _ in finishing], logits)
        if self.speculative:
            first_of = {r.id: tok for (r, _, _), tok in zip(finishing, first)}
            self._prefill_mtp(plan, lo, hi, pos, out.hidden_states, keep, first_of)
        for i, ((r, _, _), tok) in enumerate(zip(finishing, first)):
            self._emit(r, [tok], logits[i:i + 1])

    def _prefill_mtp(self, plan, lo: int, hi: int, pos: torch.Tensor, hidden: torch.Tensor, keep: torch.Tensor,
                     first: dict[int, int]) -> None:
        """MTP over this prefill chunk: position p sees (h_p, x_{p+1}), so its cache follows the main
        one; a prompt that ended here has x_L = its first sampled token as the last next-id, and the
        MTP output there drafts d_1 (under the request's own transform, x_L counted)."""
        dev = self.engine.device
        next_ids = torch.zeros_like(pos)  # (b, T)
        take = torch.zeros(hi - lo, dtype=torch.long, device=dev)
        extra = torch.zeros(hi - lo, 1, dtype=torch.long, device=dev)  # x_L of the rows that end here
        by_row: dict[int, Request] = {}
        for r, n in plan:
            i, s = r.slot - lo, r.prefilled - n
            nxt = r.prompt[s + 1:s + n + 1] + ([first[r.id]] if r.id in first else [])
            next_ids[i, :n] = torch.tensor(nxt, device=dev)
            take[i] = n - 1
            if r.id in first:
                by_row[i], extra[i, 0] = r, first[r.id]
        probs = self._row_probs(by_row, hi - lo)
        gens = [by_row[i].generator if i in by_row else self._spare for i in range(hi - lo)]
        q, d, u = mtp_draft(self.model, self.cache, hidden, next_ids, pos, take, keep,
                            lambda x, *_: probs(x, extra, None), None, gens, slice(lo, hi))
        for i, r in by_row.items():
            r.draft = DraftState(token=extra[i], q=q[i:i + 1], draft=d[i:i + 1], mtp_hidden=u[i:i + 1])

    def _decode_speculative(self, rows: list[Request]) -> None:
        """One speculative_step over cache rows 0..highest decoding slot; the others ride along
        (their keep is 0, their state a dummy one-hot draft)."""
        dev, k = self.engine.device, self.speculative
        b = max(r.slot for r in rows) + 1
        by_row = {r.slot: r for r in rows}
        V, C = self.config.vocab_size, self.config.hidden_size
        token = torch.zeros(b, dtype=torch.long, device=dev)  # (b,) x_L
        draft = torch.zeros(b, dtype=torch.long, device=dev)  # (b,) d_1
        q = torch.zeros(b, V, device=dev)  # (b, V)
        q[:, 0] = 1.0  # riders: a valid one-hot draft distribution for token 0
        u = torch.zeros(b, 1, C, dtype=self.engine.dtype, device=dev)  # (b, 1, C)
        active = torch.zeros(b, dtype=torch.bool, device=dev)
        for i, r in by_row.items():
            token[i], draft[i], active[i] = r.pending, r.draft.draft[0], True
            q[i], u[i] = r.draft.q[0], r.draft.mtp_hidden[0]
        gens = [by_row[i].generator if i in by_row else self._spare for i in range(b)]
        new, n_new, a, state, logits = speculative_step(
            self.model, self.cache, DraftState(token, q, draft, u), k, self._row_probs(by_row, b), None, gens,
            active, slice(0, b))
        new_l, n_l, a_l = new.tolist(), n_new.tolist(), a.tolist()
        for i, r in by_row.items():
            r.drafted += k
            r.accepted += a_l[i]
            self.spec_steps += 1
            for j in range(k):
                self.spec_drafted[j] += 1
                self.spec_accepted[j] += int(a_l[i] > j)
            one = slice(i, i + 1)
            r.draft = DraftState(state.token[one], state.q[one], state.draft[one], state.mtp_hidden[one])
            self._emit(r, new_l[i][:n_l[i]], logits[i, :n_l[i]].float())

    def _row_probs(self, by_row: dict[int, Request], b: int):
        """The sampling transform of each of b rows (a speculative.ProbsFn): each request's own
        params, repetition penalty (seen + tokens) and presence/frequency penalties (counts + the
        first n_real tokens); rows without a request get greedy. Rows sharing plain params (no
        penalties) go through token_probs together."""
        groups: dict[SamplingParams, list[int]] = {}
        single = []
        for i in range(b):
            r = by_row.get(i)
            if r is None:
                groups.setdefault(_GREEDY, []).append(i)
            elif r.seen is None and r.counts is None:
                groups.setdefault(r.params, []).append(i)
            else:
                single.append(i)

        def probs(logits: torch.Tensor, tokens: torch.Tensor | None, n_real: torch.Tensor | None) -> torch.Tensor:
            x = logits.float()  # (b, V)
            out = torch.empty_like(x)
            for params, idx in groups.items():
                out[idx] = token_probs(x[idx], params)
            for i in single:
                r, xi, seen = by_row[i], x[i:i + 1], by_row[i].seen
                toks = tokens[i] if tokens is not None else tokens
                if toks is not None and n_real is not None:
                    toks = toks[:int(n_real[i])]
                if r.counts is not None:
                    counts = r.counts
                    if toks is not None:
                        counts = counts.index_add(0, toks, torch.ones_like(toks, dtype=counts.dtype))
                    xi = xi - r.presence_penalty * (counts > 0) - r.frequency_penalty * counts
                if seen is not None and toks is not None:
                    seen = seen.clone()
                    seen[0, toks] = True
                out[i:i + 1] = token_probs(xi, r.params, seen)
            return out
        return probs

    def _sample_and_emit(self, rows: list[Request], logits: torch.Tensor) -> None:
        """logits (n, V), one row per request: sample each request's next token, emit, finish."""
        raw = logits.float()
        for i, (r, tok) in enumerate(zip(rows, self._sample(rows, raw))):
            self._emit(r, [tok], raw[i:i + 1])

    def _sample(self, rows: list[Request], raw: torch.Tensor) -> list[int]:
        """raw (n, V) fp32 logits, one row per request -> each request's next token."""
        # greedy rows without penalties: one argmax for all of them (what token_probs' one-hot picks)
        plain = [i for i, r in enumerate(rows) if r.params.greedy and r.seen is None and r.counts is None]
        argmax = dict(zip(plain, raw[plain].argmax(-1).tolist())) if plain else {}
        out = []
        for i, r in enumerate(rows):
            if i in argmax:
                out.append(argmax[i])
                continue
            x = raw[i:i + 1]  # (1, V)
            if r.counts is not None:
                x = x - r.presence_penalty * (r.counts > 0) - r.frequency_penalty * r.counts
            probs = token_probs(x, r.params, r.seen)
            out.append(int(probs.argmax(-1)) if r.params.greedy
                       else int(torch.multinomial(probs, 1, generator=r.generator)))
        return out

    def _emit(self, r: Request, tokens: list[int], raw: torch.Tensor) -> None:
        """Hand a request its new tokens (raw (n, V): the logits each was drawn from), cut at a stop
        token or its length limit; finish it there, else the last token is the next decode input."""
        reason = None
        for j, tok in enumerate(tokens):
            if tok in r.params.stop_token_ids:
                reason, tokens = "stop", tokens[:j + 1]
                break
            if len(r.prompt) + len(r.output) + j + 1 >= r.limit:
                reason, tokens = "length", tokens[:j + 1]
                break
        lp = _logprobs(raw[:len(tokens)], tokens, r.logprobs) if r.logprobs is not None else None
        for tok in tokens:
            if r.seen is not None:
                r.seen[0, tok] = True
            if r.counts is not None:
                r.counts[tok] += 1
        extra = {"prompt_logprobs": r.prompt_lp} if r.prompt_logprobs is not None and not r.output else {}
        r.output += tokens
        if reason is not None:
            with self._lock:
                self._finish(r, reason, tokens, lp, **extra)
        else:
            r.pending = tokens[-1]
            if r.on_event is not None:
                r.on_event(Event(tokens, lp, **extra))


def _logprobs(logits: torch.Tensor, tokens: list[int], top: int) -> list[TokenLogprob]:
    """logits (n, V) and the n tokens they produced -> each token's logprob and the top `top`."""
    lp = torch.log_softmax(logits.float(), dim=-1)  # (n, V)
    chosen = lp.gather(1, torch.tensor(tokens, device=lp.device)[:, None])[:, 0].tolist()
    if top:
        vals, idx = lp.topk(top, dim=-1)  # (n, top)
        tops = [list(zip(i, v)) for i, v in zip(idx.tolist(), vals.tolist())]
    else:
        tops = [[] for _ in tokens]
    return [TokenLogprob(t, c, tp) for t, c, tp in zip(tokens, chosen, tops)]
