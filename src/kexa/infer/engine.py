"""The generation engine: chunked prefill, cached decode, ragged batches, stop tokens, streaming,
seeded sampling, and MTP self-speculative decoding (`speculative.py`).

    engine = Engine(model)
    result = engine.generate([[5, 6, 7], [9]], SamplingParams(max_new_tokens=32, temperature=0))
    for step in engine.stream([[5, 6, 7]], SamplingParams(seed=0), speculative=2):
        print(step.tokens[0])                       # new tokens of row 0 in this step

Choices
- Ragged batches without padding: consecutive prompts of equal length are prefilled together and
  the others on their own (rows of the cache are independent; prefill is compute-bound, so padding
  buys little on one device), then all rows decode together, each at its own absolute position. The cache's position-based masks make
  padding unnecessary, so no pad token ever enters attention or the MoE router.
- Chunked prefill: a prompt is fed `prefill_chunk` tokens at a time, so attention memory is
  O(chunk x (history on global layers + W on sliding layers)) instead of O(T^2).
- Finished rows keep stepping with their last token until the whole batch is done (their output is
  ignored); this keeps every step a dense (b, T) batch. A row also stops at the model's context
  length (`max_position_embeddings`).
- Sampling is seeded through one torch.Generator per call: same seed, same batch -> same tokens.
- `logprobs=True` also returns log π(token) of every emitted token under the model's raw distribution
  (log-softmax of the fp32 logits, before temperature / top-k / top-p): the behaviour policy's
  log-probs that RL records at generation time (kexa.train.rl_stage), equal to a training forward's
  `token_logprobs` of the same tokens at the same weights (tests/test_rl_stage.py). Plain decoding only.
- MoE decode runs the model's grouped expert matmul (`torch._grouped_mm`): no Python loop over
  experts or tokens in a decode step.
- `compile=True` (gpt-fast's recipe): the plain decode step — one token per row through every layer,
  the cache update and the lm_head — is traced once by `torch.compile` (inductor, C++ wrapper), which
  removes the per-op dispatch cost that dominates a small batch on CPU (docs/inference.md). The
  trace needs static shapes, so a compiled engine keeps one cache, sized in powers of two, across
  requests, and global layers attend over the whole buffer under the position mask. The first
  request of a new (batch, cache size) pays the compilation (tens of seconds on a 2-core CPU);
  prefill and speculative steps stay eager.

Shape legend: b rows, T tokens, V vocabulary, C hidden.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

from .cache import KVCache
from .sampling import SamplingParams, next_token
from .speculative import DraftState, mtp_draft, speculative_step


class GenerationError(ValueError):
    """A request the engine cannot serve (empty prompt, too long, bad ids, no MTP block)."""


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    steps: int = 0  # decode forwards of the main model (one per batch step)
    drafted: list[int] = field(default_factory=list)  # per draft position: drafts proposed (row-steps)
    accepted: list[int] = field(default_factory=list)  # per draft position: drafts accepted

    @property
    def tokens_per_s(self) -> float:
        """New tokens per second of generation, prefill included (what a user waits for)."""
        total = self.prefill_s + self.decode_s
        return self.new_tokens / total if total > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.new_tokens / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted / proposed drafts over all positions (None without speculation)."""
        return sum(self.accepted) / sum(self.drafted) if sum(self.drafted) else None

    @property
    def acceptance_per_position(self) -> list[float]:
        return [a / d if d else 0.0 for a, d in zip(self.accepted, self.drafted)]

    @property
    def mean_accepted_length(self) -> float | None:
        """Tokens a row emits per verify step (accepted drafts + 1), averaged over active rows."""
        return 1 + sum(self.accepted) / self.drafted[0] if self.drafted and self.drafted[0] else None


@dataclass
class StepOutput:
    tokens: list[list[int]]  # new tokens of each row in this step (empty for finished rows)
    finish_reasons: list[str | None]  # "stop" | "length" once a row is done
    logprobs: list[list[float]] | None = None  # log π of each new token (generate(..., logprobs=True))


@dataclass
class GenerationResult:
    token_ids: list[list[int]]
    finish_reasons: list[str]
    stats: GenerationStats
    logprobs: list[list[float]] | None = None  # per row, one per token of token_ids (logprobs=True)


class Generation:
    """A running request: iterate for StepOutputs; afterwards read token_ids, finish_reasons, stats."""

    def __init__(self, steps: Iterator[StepOutput], n_rows: int, stats: GenerationStats):
        self._steps, self.stats = steps, stats
        self.token_ids: list[list[int]] = [[] for _ in range(n_rows)]
        self.finish_reasons: list[str | None] = [None] * n_rows
        self.logprobs: list[list[float]] | None = None

    def __iter__(self) -> Iterator[StepOutput]:
        for step in self._steps:
            for i, (toks, reason) in enumerate(zip(step.tokens, step.finish_reasons)):
                self.token_ids[i].extend(toks)
                self.finish_reasons[i] = reason
            if step.logprobs is not None:
                self.logprobs = self.logprobs or [[] for _ in self.token_ids]
                for row, lps in zip(self.logprobs, step.logprobs):
                    row.extend(lps)
            yield step

    def result(self) -> GenerationResult:
        for _ in self:
            pass
        return GenerationResult(self.token_ids, [r or "length" for r in self.finish_reasons], self.stats,
                                self.logprobs)


COMPILE_OPTIONS = {"cpp_wrapper": True}  # inductor: a C++ wrapper calls the kernels, no Python per op


class Engine:
    def __init__(self, model, prefill_chunk: int = 512, compile: bool = False):
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be >= 1, got {prefill_chunk}")
        self.model = model.eval()
        self.config = model.config
        self.prefill_chunk = prefill_chunk
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.compiled = compile
        self._decode = (torch.compile(self._decode_logits, dynamic=False, options=COMPILE_OPTIONS)
                        if compile else self._decode_logits)
        self._cache: KVCache | None = None  # the compiled engine's reused cache

    def _decode_logits(self, token: torch.Tensor, pos: torch.Tensor, cache: KVCache, keep: torch.Tensor) -> torch.Tensor:
        """One plain decode step: token (b, 1) at positions pos (b, 1) -> next-token logits (b, V);
        commits the token of the rows where keep (b,) is 1 (cache.begin was called)."""
        logits = self.model(token, pos, cache=cache).logits[:, -1]
        cache.commit(keep)
        return logits

    def _cache_for(self, batch: int, max_len: int, include_mtp: bool) -> KVCache:
        if not self.compiled:
            return KVCache(self.config, batch, max_len, dtype=self.dtype, device=self.device, include_mtp=include_mtp)
        max_len = max(256, 1 << (max_len - 1).bit_length())  # a few sizes -> a few traces
        c = self._cache
        if c is None or (c.batch_size, c.max_len, c.include_mtp) != (batch, max_len, include_mtp):
            c = self._cache = KVCache(self.config, batch, max_len, dtype=self.dtype, device=self.device,
                                      include_mtp=include_mtp)
        c.reset()
        return c

    # ------------------------------------------------------------------ public API
    def generate(self, prompts: list[list[int]], params: SamplingParams, speculative: int = 0,
                 logprobs: bool = False) -> GenerationResult:
        return self.stream(prompts, params, speculative, logprobs).result()

    def stream(self, prompts: list[list[int]], params: SamplingParams, speculative: int = 0,
               logprobs: bool = False) -> Generation:
        """Validate now (errors raise here, not on first iteration) and return a lazy Generation.
        logprobs=True: each step also carries log π of its new tokens (module docstring)."""
        self._validate(prompts, speculative)
        if logprobs and speculative:
            raise GenerationError("logprobs are recorded by plain decoding only (speculative must be 0)")
        stats = GenerationStats(prompt_tokens=sum(map(len, prompts)),
                                drafted=[0] * speculative, accepted=[0] * speculative)
        return Generation(self._run(prompts, params, speculative, stats, logprobs), len(prompts), stats)

    def _validate(self, prompts, speculative: int) -> None:
        cfg = self.config
        if not prompts:
            raise GenerationError("no prompts given")
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise GenerationError(f"prompt {i} is empty: at least one token is needed to condition on")
            if len(p) >= cfg.max_position_embeddings:
                raise GenerationError(f"prompt {i} has {len(p)} tokens; the model's context is "
                                      f"{cfg.max_position_embeddings} (max_position_embeddings), leaving no room "
                                      f"to generate")
            bad = [t for t in p if not isinstance(t, int) or not 0 <= t < cfg.vocab_size]
            if bad:
                raise GenerationError(f"prompt {i} has token ids outside [0, {cfg.vocab_size}): {bad[:5]}")
        if speculative not in (0, 1, 2):
            raise GenerationError(f"speculative must be 0 (off), 1 or 2 drafted tokens, got {speculative!r}")
        if speculative and not cfg.has_mtp:
            raise GenerationError("speculative decoding needs the MTP block, and this model has none "
                                  "(num_nextn_predict_layers = 0)")

    # ------------------------------------------------------------------ the loop
    @torch.inference_mode()
    def _run(self, prompts, params: SamplingParams, k: int, stats: GenerationStats,
             logprobs: bool = False) -> Iterator[StepOutput]:
        cfg, dev = self.config, self.device
        B = len(prompts)
        limit = [min(len(p) + params.max_new_tokens, cfg.max_position_embeddings) for p in prompts]
        # a finished row may sit k+1 positions past its limit and still feed k+1 tokens per step
        cache = self._cache_for(B, max(limit) + 2 * k + 1, include_mtp=k > 0)
        gen = torch.Generator(device=dev)
        if params.seed is not None:
            gen.manual_seed(params.seed)
        else:
            gen.seed()  # fresh entropy for this generator only; the global RNG is left alone
        stops = set(params.stop_token_ids)
        seen = None
        if params.uses_penalty:
            seen = torch.zeros(B, cfg.vocab_size, dtype=torch.bool, device=dev)
            for i, p in enumerate(prompts):
                seen[i, torch.tensor(p, device=dev)] = True

        t0 = time.perf_counter()
        runs = same_length_runs(prompts)
        last_logits, last_hidden = [], []
        for rows in runs:
            logits, hidden = self._prefill(cache, rows, prompts[rows], keep_hidden=k > 0)
            last_logits.append(logits)
            last_hidden.append(hidden)
        logits = torch.cat(last_logits)  # (b, V)
        token = next_token(logits, params, seen, gen)  # (b,) first new token x_n
        lp = token_logprob(logits, token) if logprobs else None  # (b,)
        state = None
        if k:
            state = self._first_draft(cache, prompts, runs, last_hidden, token, params, seen, gen)
        stats.prefill_s = time.perf_counter() - t0

        lengths = [len(p) for p in prompts]  # tokens of each row so far (prompt + emitted)
        done: list[str | None] = [None] * B
        step = self._emit(token[:, None], torch.ones(B, dtype=torch.long), lengths, limit, stops, done, stats, lp)
        seen = seen.scatter_(1, token[:, None], True) if seen is not None else None
        yield step
        while not all(done):
            t1 = time.perf_counter()
            # finished rows keep stepping but commit nothing, so they never outgrow the cache
            active = torch.tensor([d is None for d in done], device=dev)
            if k:
                new, n_new, a, state, _ = speculative_step(self.model, cache, state, k, params, seen, gen, active)
                for j in range(k):
                    stats.drafted[j] += int(active.sum())
                    stats.accepted[j] += int(((a > j) & active).sum())
            else:
                pos = cache.lengths[:, None].clone()  # (b, 1)
                cache.begin(pos)
                logits = self._decode(token[:, None], pos, cache, active.long())  # (b, V)
                token = next_token(logits, params, seen, gen)
                new, n_new = token[:, None], torch.ones(B, dtype=torch.long)
                lp = token_logprob(logits, token) if logprobs else None
            stats.steps += 1
            if seen is not None:
                seen = seen.scatter_(1, new, True)
            step = self._emit(new, n_new, lengths, limit, stops, done, stats, lp)
            stats.decode_s += time.perf_counter() - t1
            yield step

    def _prefill(self, cache: KVCache, rows: slice, prompts: list[list[int]], keep_hidden: bool):
        """Chunked prefill of rows whose prompts have one length. Returns the last position's logits
        (b, V) and, for speculation, the normed hidden states of the final chunk (b, t, C), with the
        MTP cache caught up on every earlier chunk."""
        ids = torch.tensor(prompts, device=self.device)  # (b, n)
        b, n = ids.shape
        chunk, hidden = self.prefill_chunk, None
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            pos = torch.arange(s, e, device=self.device).expand(b, -1)  # (b, t)
            cache.begin(pos, rows)
            out = self.model(ids[:, s:e], pos, cache=cache, num_logits_to_keep=1, return_hidden=keep_hidden)
            cache.commit()
            if keep_hidden and e < n:  # MTP over this chunk: its next tokens are all known
                last = torch.full((b,), e - s - 1, device=self.device)  # its draft is discarded
                mtp_draft(self.model, cache, out.hidden_states, ids[:, s + 1:e + 1], pos, last, e - s,
                          SamplingParams(temperature=0), None, torch.Generator(device=self.device), rows)
            hidden = out.hidden_states
        return out.logits[:, -1], hidden

    def _first_draft(self, cache, prompts, runs, last_hidden, token, params, seen, gen) -> DraftState:
        """MTP over each run's final prefill chunk, whose last next-token is the first sampled one."""
        qs, drafts, us = [], [], []
        for rows, hidden in zip(runs, last_hidden):
            b, t = hidden.shape[:2]
            n = len(prompts[rows.start])
            ids = torch.tensor([p[n - t + 1:] for p in prompts[rows]], device=self.device).view(b, t - 1)
            next_ids = torch.cat([ids, token[rows, None]], dim=1)  # (b, t)
            pos = torch.arange(n - t, n, device=self.device).expand(b, -1)
            seen_rows = None if seen is None else seen[rows].clone().scatter_(1, token[rows, None], True)
            q, d, u = mtp_draft(self.model, cache, hidden, next_ids, pos, torch.full((b,), t - 1, device=self.device),
                                t, params, seen_rows, gen, rows)
            qs.append(q)
            drafts.append(d)
            us.append(u)
        return DraftState(token=token, q=torch.cat(qs), draft=torch.cat(drafts), mtp_hidden=torch.cat(us))

    @staticmethod
    def _emit(new: torch.Tensor, n_new: torch.Tensor, lengths, limit, stops, done, stats,
              lp: torch.Tensor | None = None) -> StepOutput:
        """Cut each row's new tokens at a stop token or its length limit; mark rows done. lp (b,): the log-prob
        of each row's (single) new token, when recorded."""
        rows_new = new.tolist()
        counts = n_new.tolist()
        lps = None if lp is None else [[v] for v in lp.tolist()]
        out, reasons = [], []
        for i, (toks, n) in enumerate(zip(rows_new, counts)):
            if done[i]:
                out.append([])
                reasons.append(done[i])
                if lps is not None:
                    lps[i] = []
                continue
            toks = toks[:min(n, limit[i] - lengths[i])]
            for j, t in enumerate(toks):
                if t in stops:
                    toks, done[i] = toks[:j + 1], "stop"
                    break
            lengths[i] += len(toks)
            if not done[i] and lengths[i] >= limit[i]:
                done[i] = "length"
            stats.new_tokens += len(toks)
            out.append(toks)
            reasons.append(done[i])
            if lps is not None:
                lps[i] = lps[i][:len(toks)]
        return StepOutput(out, reasons, lps)


def token_logprob(logits: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """logits (b, V) and the sampled token (b,) -> (b,) fp32 log-softmax of the raw logits at the token: the
    same computation as kexa.train.rl.token_logprobs (cross-entropy in fp32), so rollout and trainer agree."""
    return -torch.nn.functional.cross_entropy(logits.float(), token, reduction="none")


def same_length_runs(prompts: list[list[int]]) -> list[slice]:
    """Maximal runs of consecutive prompts with equal length: each run is prefilled as one batch."""
    runs, start = [], 0
    for i in range(1, len(prompts) + 1):
        if i == len(prompts) or len(prompts[i]) != len(prompts[start]):
            runs.append(slice(start, i))
            start = i
    return runs
