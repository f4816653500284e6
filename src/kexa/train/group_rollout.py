"""Rollouts for the RL and preference stages: G sampled responses per prompt from the current policy through
kexa's Engine (with their log-probs when RL asks), and the padded training rows they become.

    out = EngineRollouts(model).generate(prompt_ids_repeated, params)            # RL: ids + log μ per row
    groups = sample_groups(model, tokenizer, prompt_ids, G=4, params=SamplingParams(max_new_tokens=64, seed=s))
    x, labels = response_rows(prompt_ids, groups.responses, G, pad_id)    # (R, T), labels -100 off the response

The P prompts are repeated G times back to back, so the engine prefills each group's G copies together (its
ragged-batch rule: consecutive equal-length prompts share a prefill) and decodes all R = P·G rows as one
batch. Sampling is seeded per call (the engine's own generator): the same weights, prompts and seed give the
same responses, which is what makes a resumed preference run bitwise the uninterrupted one. A response ends
at `<|endofturn|>` (kept: the policy must learn to stop) or at max_new_tokens ("length").

`RolloutSource` is the interface both stages sample through (generate(prompts, params, logprobs) ->
`Rollout`; sync(model) after each optimiser step); `EngineRollouts` is the in-process engine over the trainer's
own weights. `kexa rl` keeps one across steps and asks for the log-probs recorded at generation (log μ,
AGAPO's importance weight); `kexa preference` samples through a fresh one per step via `sample_groups`, without.

Shapes: P prompts, G responses per prompt, R = P·G rows, T = the longest prompt + response.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import torch

from ..data.loader import IGNORE
from ..infer.engine import Engine
from ..infer.sampling import SamplingParams
from ..model.transformer import KExaone


@dataclass
class Rollout:
    token_ids: list[list[int]]  # per row: the response's tokens (the stop token included when emitted)
    logprobs: list[list[float]] | None  # per row: log μ of each of them (None: not asked for)
    finish_reasons: list[str]  # "stop" | "length"
    seconds: float


class RolloutSource(Protocol):
    """Where rollouts come from: the in-process engine, or (at scale) a vLLM/SGLang server (docs/rl.md)."""

    def generate(self, prompts: list[list[int]], params: SamplingParams, logprobs: bool = True) -> Rollout: ...

    def sync(self, model: KExaone) -> None: ...  # make the source sample from the trainer's current weights


class EngineRollouts:
    """kexa's Engine over the trainer's own model: weights are shared, so sync only re-points at the model.
    Generates in the weights' dtype, restores the model's train mode afterwards. compile=True: the engine's
    compiled decode step (gpt-fast's recipe; one trace per rollout shape, reused across rollouts since the
    optimiser updates the same parameter tensors in place; the first rollout pays the compilation)."""

    def __init__(self, model: KExaone | None = None, compile: bool = False):
        self.model, self.compile, self.engine = model, compile, None

    def sync(self, model: KExaone) -> None:
        if model is not self.model:
            self.model, self.engine = model, None

    def generate(self, prompts: list[list[int]], params: SamplingParams, logprobs: bool = True) -> Rollout:
        was_training = self.model.training
        t0 = time.perf_counter()
        try:
            if self.engine is None:
                self.engine = Engine(self.model, compile=self.compile)  # sets eval mode
            self.model.eval()
            res = self.engine.generate(prompts, params, logprobs=logprobs)
        finally:
            self.model.train(was_training)
        return Rollout(res.token_ids, res.logprobs, res.finish_reasons, time.perf_counter() - t0)


@dataclass
class Groups:
    responses: list[list[int]]  # R = P·G response token ids, group-major (prompt p's are rows p·G .. p·G+G-1)
    texts: list[str]  # the responses decoded with their special tokens (what rewards read)
    finish_reasons: list[str]  # "stop" | "length" per row


def sample_groups(model, tokenizer, prompts: list[list[int]], G: int, params: SamplingParams) -> Groups:
    """G responses to each prompt, sampled by `model` under `params` (seeded); restores the model's mode."""
    if G < 2:
        raise ValueError(f"a group needs G >= 2 responses; got G={G}")
    result = EngineRollouts(model).generate([p for p in prompts for _ in range(G)], params, logprobs=False)
    texts = [tokenizer.decode(ids) for ids in result.token_ids]
    return Groups(result.token_ids, texts, result.finish_reasons)


def response_rows(prompts: list[list[int]], responses: list[list[int]], G: int,
                  pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt + response per row, right-padded (causal attention never lets padding reach a real token):
    input_ids (R, T) and labels (R, T), labels[r, t] = the token at t+1 where it is a response token, else
    IGNORE — the SFT layout, so the loop counts response tokens as its target tokens."""
    if len(responses) != len(prompts) * G:
        raise ValueError(f"{len(responses)} responses for {len(prompts)} prompts x G={G}")
    rows = [prompts[r // G] + responses[r] for r in range(len(responses))]
    T = max(map(len, rows))
    x = torch.full((len(rows), T), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    for r, row in enumerate(rows):
        n_prompt = len(prompts[r // G])
        x[r, :len(row)] = torch.tensor(row)
        labels[r, n_prompt - 1:len(row) - 1] = torch.tensor(row[n_prompt:])  # position t predicts token t+1
    return x, labels
