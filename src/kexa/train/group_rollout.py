"""Group rollouts: G sampled responses per prompt from the current policy through kexa's Engine, and the
padded training rows they become.

    groups = sample_groups(model, tokenizer, prompt_ids, G=4, params=SamplingParams(max_new_tokens=64, seed=s))
    x, labels = response_rows(prompt_ids, groups.responses, G, pad_id)    # (R, T), labels -100 off the response

The P prompts are repeated G times back to back, so the engine prefills each group's G copies together (its
ragged-batch rule: consecutive equal-length prompts share a prefill) and decodes all R = P·G rows as one
batch. Sampling is seeded per call (the engine's own generator): the same weights, prompts and seed give the
same responses, which is what makes a resumed preference run bitwise the uninterrupted one. A response ends
at `<|endofturn|>` (kept: the policy must learn to stop) or at max_new_tokens ("length").

The RL stage (AGAPO) needs the same sampling plus the rollout log-probs; the two can share this module once
both have landed (its log-probs are one `token_logprobs` forward over `response_rows`).

Shapes: P prompts, G responses per prompt, R = P·G rows, T = the longest prompt + response.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.loader import IGNORE
from ..infer.engine import Engine
from ..infer.sampling import SamplingParams


@dataclass
class Groups:
    responses: list[list[int]]  # R = P·G response token ids, group-major (prompt p's are rows p·G .. p·G+G-1)
    texts: list[str]  # the responses decoded with their special tokens (what rewards read)
    finish_reasons: list[str]  # "stop" | "length" per row


def sample_groups(model, tokenizer, prompts: list[list[int]], G: int, params: SamplingParams) -> Groups:
    """G responses to each prompt, sampled by `model` under `params` (seeded); restores the model's mode."""
    if G < 2:
        raise ValueError(f"a group needs G >= 2 responses; got G={G}")
    was_training = model.training
    try:
        result = Engine(model).generate([p for p in prompts for _ in range(G)], params)  # Engine: eval mode
    finally:
        model.train(was_training)
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
