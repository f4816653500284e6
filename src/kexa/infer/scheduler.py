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
  `commit(keep)` protocol), then prefill chunks of waiting prompts under the rest of the per-step
  token budget (`step_tokens`; Sarathi-Serve's chunked prefill). A long prompt therefore never stalls
  the streams already running for more than one chunk, and a request that finished its prefill
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
- MTP speculation is not scheduled here (speculative steps verify every row with one set of sampling
  params; per-request params would need per-row acceptance): `Engine.stream(speculative=K)` has it.

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

    @property
    def decoding(self) -> bool:
        return self.pending is not None


class Scheduler:
    def __init__(self, engine: Engine, max_batch: int = 16, max_waiting: int = 256, step_tokens: int = 512,
                 max_len: int | None = None):
        if max_batch < 1 or max_waiting < 0 or step_tokens < 1:
            raise ValueError(f"need max_batch >= 1, max_waiting >= 0, step_tokens >= 1; got {max_batch}, "
                             f"{max_waiting}, {step_tokens}")
        self.engine, self.model, self.config = engine, engine.model, engine.config
        self.max_batch, self.max_waiting, self.step_tokens = max_batch, max_waiting, step_tokens
        self.context = min(max_len or self.config.max_position_embeddings, self.config.max_position_embeddings)
        cache_len = self.context
        if engine.compiled:  # the compiled step's static shapes: a power-of-two buffer (engine's rule)
            cache_len = max(256, 1 << (cache_len - 1).bit_length())
        self.cache = KVCache(self.config, max_batch, cache_len, dtype=engine.dtype, device=engine.device,
                             include_mtp=False)
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
            self._decode(decoding)
        budget = self.step_tokens - len(decoding)
        for req in [r for r in self.slots if r is not None and not r.decoding and not r.cancelled]:
            if budget <= 0:
                break
            budget -= self._prefill_chunk(req, budget)

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

    def _prefill_chunk(self, req: Request, budget: int) -> int:
        """Feed the next chunk of req's prompt; on its last chunk, sample the first new token."""
        dev = self.engine.device
        s = req.prefilled
        e = min(len(req.prompt), s + min(budget, self.engine.prefill_chunk))
        ids = torch.tensor([req.prompt[s:e]], device=dev)  # (1, t)
        pos = torch.arange(s, e, device=dev)[None]  # (1, t)
        rows = slice(req.slot, req.slot + 1)
        want_all = req.prompt_logprobs is not None
        self.cache.begin(pos, rows)
        logits = self.model(ids, pos, cache=self.cache, num_logits_to_keep=0 if want_all else 1).logits[0]  # (t|1, V)
        self.cache.commit()
        req.prefilled = e
        extra = {}
        if want_all:
            targets = req.prompt[s + 1:e + 1]  # the prompt tokens these logits predict
            if targets:
                req.prompt_lp += _logprobs(logits[:len(targets)], targets, req.prompt_logprobs)
            if e == len(req.prompt):
                extra["prompt_logprobs"] = req.prompt_lp
        if e == len(req.prompt):
            self._sample_and_emit([req], logits[-1:], **extra)
        return e - s

    def _sample_and_emit(self, rows: list[Request], logits: torch.Tensor, **extra) -> None:
        """logits (n, V), one row per request: sample each request's next token, emit, finish."""
        raw = logits.float()
        for i, r in enumerate(rows):
            x = raw[i:i + 1]  # (1, V)
            if r.counts is not None:
                x = x - r.presence_penalty * (r.counts > 0) - r.frequency_penalty * r.counts
            probs = token_probs(x, r.params, r.seen)
            tok = int(probs.argmax(-1)) if r.params.greedy else int(torch.multinomial(probs, 1, generator=r.generator))
            lp = _logprobs(raw[i:i + 1], [tok], r.logprobs) if r.logprobs is not None else None
            if r.seen is not None:
                r.seen[0, tok] = True
            if r.counts is not None:
                r.counts[tok] += 1
            r.output.append(tok)
            reason = None
            if tok in r.params.stop_token_ids:
                reason = "stop"
            elif len(r.prompt) + len(r.output) >= r.limit:
                reason = "length"
            if reason is not None:
                with self._lock:
                    self._finish(r, reason, [tok], lp, **extra)
            else:
                r.pending = tok
                if r.on_event is not None:
                    r.on_event(Event([tok], lp, **extra))


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
