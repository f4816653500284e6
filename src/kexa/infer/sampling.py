"""Sampling controls: the logits -> probability transform shared by plain and speculative decoding.

Every decoding mode samples from `token_probs(logits, params, seen)`:
    repetition penalty (CTRL, Keskar et al. 2019: seen tokens' logits divided by the penalty when
    positive, multiplied when negative) -> temperature -> top-k -> top-p (nucleus, Holtzman et al. 2020)
Greedy decoding (temperature 0) is the one-hot distribution on the argmax, so greedy is not a
separate code path: speculative acceptance min(1, p/q) and the residual max(0, p - q) reduce exactly
to "accept iff the draft is the argmax" and "emit the argmax" (reference §6). The order of the
filters follows HF `generate()` (temperature, then top-k, then top-p).

The report's recommended settings (reference §7) are temperature 1.0, top_p 0.95.

Shape legend: b rows, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # 1 = off
    top_k: int = 0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        errors = []
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            errors.append(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature >= 0):
            errors.append(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            errors.append(f"top_p must lie in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            errors.append(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not (isinstance(self.repetition_penalty, (int, float)) and math.isfinite(self.repetition_penalty)
                and self.repetition_penalty > 0):
            errors.append(f"repetition_penalty must be a finite number > 0, got {self.repetition_penalty!r}")
        if any(not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            errors.append(f"stop_token_ids must be non-negative integers, got {self.stop_token_ids!r}")
        if errors:
            raise ValueError("invalid sampling parameters: " + "; ".join(errors))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def uses_penalty(self) -> bool:
        return self.repetition_penalty != 1.0


def token_probs(logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None = None) -> torch.Tensor:
    """logits (b, V) -> probabilities (b, V) in fp32 after penalty, temperature, top-k and top-p.
    `seen` (b, V) bool marks tokens already in each row (needed only with a repetition penalty)."""
    x = logits.float()
    if params.uses_penalty and seen is not None:
        penalised = torch.where(x > 0, x / params.repetition_penalty, x * params.repetition_penalty)
        x = torch.where(seen, penalised, x)
    if params.greedy:
        return torch.zeros_like(x).scatter_(-1, x.argmax(-1, keepdim=True), 1.0)
    x = x / params.temperature
    if params.top_k and params.top_k < x.shape[-1]:
        kth = x.topk(params.top_k, dim=-1).values[:, -1:]  # (b, 1)
        x = x.masked_fill(x < kth, float("-inf"))
    probs = torch.softmax(x, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass strictly above each token
        drop_sorted = before >= params.top_p  # keep the smallest prefix whose mass reaches top_p
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from probs (b, V) -> (b,) int64."""
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def next_token(logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None,
               generator: torch.Generator | None) -> torch.Tensor:
    """Plain decoding's token per row (b,) from logits (b, V): the argmax when greedy (what sampling
    the one-hot distribution returns, without a multinomial draw over V per step), else a sample."""
    probs = token_probs(logits, params, seen)
    return probs.argmax(-1) if params.greedy else sample(probs, generator)
