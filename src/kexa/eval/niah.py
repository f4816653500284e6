"""Needle-in-a-haystack (NIAH) evaluation: retrieval by generation over a grid of lengths x depths.

The gate of K-EXAONE's context extension (8K -> 32K -> 256K): a stage is repeated until NIAH is
near-perfect over its range (report §3.2). The test follows gkamradt's NIAH and RULER's niah tasks
(Hsieh et al. 2024, arXiv 2404.06654; reference §8):

- haystack: the *held-out* corpus (token shards or text), repeated when shorter than the context;
  generated sentences only when no corpus is given (with a warning);
- needle: a key-value fact "The secret number of Tulmorvin is 5302." (templates in six languages,
  `kexa.data.synthetic.TEMPLATES`) with a key and value from the held-out split of the synthetic
  vocabulary, so the strings never occur in the extension's training data, which shares the task;
- the needle's first token sits at `depth` x (room for it) of the haystack; the prompt ends with
  the question and the answer's prefix ("... What is the secret number of Tulmorvin?
  The secret number of Tulmorvin is"); prompt + answer budget (value_digits + 3 tokens) is exactly
  `length` tokens, so a model whose context is `length` can be asked;
- `needles > 1` is RULER's multi-key variant (niah_multikey): the other needles are distractor facts
  with other keys of the same template at random depths; only the target's value counts;
- retrieval by greedy generation through the inference engine (`kexa.infer.Engine`, chunked
  prefill and the sliding-window ring cache), exact match on the value (`answer_of`: the leading
  digits of the generated text); `digit_accuracy` (digits right in place) is reported beside it as
  partial credit - a chance-level model scores ~0.1 there, a model that starts to retrieve more;
- every (length, depth) cell averages `samples` haystacks (different offsets, keys and values);
  all prompts of one length have one length, so the engine prefills them as one batch.
Deterministic given the seed: the same model, tokenizer, haystack and seed give the same grid.

`evaluate_niah` takes a model, or any `retrieve(prompts, max_new_tokens) -> token lists` callable
(tests drive it with stubs that know or do not know the answer). The result is a JSON-ready dict:
`accuracy` maps each length (as a string) to its mean accuracy, `grid` is lengths x depths, `cells`
lists every case's answer. `plot_heatmap` (kexa.plots) draws the grid (depth x length) as a PNG.

    kexa eval niah --model runs/ext/model --lengths 256,1024,2048 --depths 0,0.5,1 --json
"""

from __future__ import annotations

import json
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data.synthetic import TEMPLATES, Filler, Vocab, answer_of, generated_filler_text
from ..plots import plot_heatmap  # noqa: F401  (the heat map lives with every other plot; re-exported)

Retriever = Callable[[list[list[int]], int], list[list[int]]]


@dataclass
class NiahConfig:
    lengths: list[int]
    depths: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    samples: int = 2  # haystacks per (length, depth) cell
    needles: int = 1  # > 1: RULER multi-key (the others are distractor facts)
    languages: list[str] = field(default_factory=lambda: ["en"])  # cases cycle through them
    value_digits: int = 4
    seed: int = 0
    batch_size: int = 8  # prompts per engine call

    def __post_init__(self) -> None:
        errors = []
        if not self.lengths or any(not isinstance(n, int) or n < 1 for n in self.lengths):
            errors.append(f"lengths must be positive integers, got {self.lengths}")
        if not self.depths or any(not 0.0 <= d <= 1.0 for d in self.depths):
            errors.append(f"depths must be fractions in [0, 1], got {self.depths}")
        if self.samples < 1 or self.needles < 1 or self.batch_size < 1:
            errors.append(f"samples, needles and batch_size must be >= 1, got {self.samples}, {self.needles}, "
                          f"{self.batch_size}")
        bad = sorted(set(self.languages) - set(TEMPLATES))
        if bad or not self.languages:
            errors.append(f"languages must be among {sorted(TEMPLATES)}, got {self.languages}")
        if errors:
            raise ValueError("; ".join(errors))


@dataclass
class Case:
    length: int
    depth: float
    lang: str
    key: str
    value: str
    prompt: list[int]
    needle_at: int  # token index where the target needle starts


class CaseBuilder:
    """Token-exact NIAH prompts from a haystack token stream and a tokenizer's `encode`."""

    def __init__(self, encode: Callable[[str], list[int]], haystack: Filler, config: NiahConfig):
        self.encode, self.haystack, self.config = encode, haystack, config
        self.vocab = Vocab("eval", config.value_digits)
        # the context length holds the prompt *and* the answer: " " + digits is at most value_digits + 1
        # tokens; two more let a model that rambles past the value still be read
        self.margin = config.value_digits + 3

    def build(self, rng: random.Random, length: int, depth: float, lang: str) -> Case:
        t = TEMPLATES[lang]
        keys = self.vocab.keys(rng, self.config.needles)
        values = [self.vocab.value(rng) for _ in keys]
        # the same token sequences as kexa.data.synthetic writes: a fact on its own line; the question
        # on its own line followed by the answer prefix
        facts = [self.encode("\n" + t["prefix"].format(key=k) + " " + v + t["suffix"] + "\n") for k, v in zip(keys, values)]
        tail = self.encode("\n" + t["question"].format(key=keys[0]) + "\n") + self.encode(t["prefix"].format(key=keys[0]))
        room = length - self.margin - len(tail) - sum(map(len, facts))
        if room < 0:
            raise ValueError(f"context length {length} is too short for {self.config.needles} needle(s), the "
                             f"question and the answer ({length - room} tokens)")
        target = round(depth * room)
        others = sorted(rng.randint(0, room) for _ in facts[1:])
        cuts = sorted([(target, 0)] + [(c, i + 1) for i, c in enumerate(others)])
        filler = self.haystack.span(rng, room)
        prompt, prev, needle_at = [], 0, 0
        for cut, i in cuts:
            prompt += filler[prev:cut]
            if i == 0:
                needle_at = len(prompt)
            prompt += facts[i]
            prev = cut
        prompt += filler[prev:] + tail
        return Case(length, depth, lang, keys[0], values[0], prompt, needle_at)

    def cases(self, length: int) -> list[Case]:
        """Every depth x sample case of one length, seeded by (seed, length) so lengths are independent."""
        c = self.config
        rng = random.Random(f"{c.seed}/{length}")
        out = []
        for i, depth in enumerate(c.depths):
            for s in range(c.samples):
                out.append(self.build(rng, length, depth, c.languages[(i * c.samples + s) % len(c.languages)]))
        return out


def digit_accuracy(predicted: str, value: str) -> float:
    """Share of the value's digits reproduced in place: partial credit that shows retrieval forming
    before exact match does (exact match alone stays 0 until every digit is right)."""
    return sum(a == b for a, b in zip(predicted, value)) / len(value)


def engine_retriever(model, prefill_chunk: int = 512) -> Retriever:
    """Greedy generation through the inference engine (chunked prefill, sliding ring cache)."""
    from ..infer import Engine, SamplingParams
    engine = Engine(model, prefill_chunk=prefill_chunk)

    def retrieve(prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        return engine.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens, temperature=0)).token_ids

    return retrieve


def haystack_from_text(text: str, encode: Callable[[str], list[int]]) -> Filler:
    return Filler(np.asarray(encode(text), dtype=np.int64))


def haystack_from_shards(shards: Sequence, max_tokens: int = 1 << 20) -> Filler:
    """Held-out token shards (kexa.data.shards.TokenShards) concatenated, EOS separators removed."""
    return Filler.from_shards(shards, max_tokens)


def fallback_haystack(encode: Callable[[str], list[int]], seed: int = 0) -> Filler:
    warnings.warn("NIAH: no held-out corpus given; the haystack is generated sentences (kexa.data.synthetic)",
                  stacklevel=2)
    return haystack_from_text(generated_filler_text(seed=seed), encode)


def evaluate_niah(model_or_retriever, tokenizer, config: NiahConfig, haystack: Filler | None = None,
                  decode: Callable[[list[int]], str] | None = None, prefill_chunk: int = 512,
                  progress: Callable[[str], None] | None = None, source: str = "held-out corpus") -> dict:
    """Run the grid; returns the JSON-ready result (see the module docstring).

    model_or_retriever: a KExaone (generation by the engine) or a `retrieve(prompts, n)` callable.
    tokenizer: anything with `encode(str) -> list[int]` and `decode(ids) -> str`.
    source: what the haystack is, recorded in the result ("generated" when haystack is None)."""
    t0 = time.perf_counter()
    encode = tokenizer.encode
    decode = decode or tokenizer.decode
    source = source if haystack is not None else "generated"
    haystack = haystack if haystack is not None else fallback_haystack(encode, config.seed)
    retrieve = model_or_retriever if not hasattr(model_or_retriever, "config") \
        else engine_retriever(model_or_retriever, prefill_chunk)
    builder = CaseBuilder(encode, haystack, config)
    grid = np.zeros((len(config.lengths), len(config.depths)))
    digits = np.zeros_like(grid)
    cells = []
    for li, length in enumerate(config.lengths):
        cases = builder.cases(length)
        answers: list[list[int]] = []
        for b in range(0, len(cases), config.batch_size):
            answers += retrieve([c.prompt for c in cases[b:b + config.batch_size]], builder.margin)
        for di, depth in enumerate(config.depths):
            mine = [(c, decode(a)) for c, a in zip(cases, answers) if c.depth == depth]
            hits = [answer_of(text) == c.value for c, text in mine]
            grid[li, di] = sum(hits) / len(hits)
            digits[li, di] = np.mean([digit_accuracy(answer_of(text), c.value) for c, text in mine])
            cells.append({"length": length, "depth": depth, "accuracy": grid[li, di], "digits": digits[li, di],
                          "n": len(hits),
                          "cases": [{"lang": c.lang, "key": c.key, "value": c.value, "needle_at": c.needle_at,
                                     "answer": text, "correct": h} for (c, text), h in zip(mine, hits)]})
        if progress is not None:
            progress(f"niah length {length}: accuracy {grid[li].mean():.3f} ({time.perf_counter() - t0:.1f}s)")
    cfg = asdict(config)
    return {"task": "niah_multikey" if config.needles > 1 else "niah_single",
            "accuracy": {str(n): float(grid[i].mean()) for i, n in enumerate(config.lengths)},
            "mean_accuracy": float(grid.mean()),
            "digit_accuracy": {str(n): float(digits[i].mean()) for i, n in enumerate(config.lengths)}, "lengths": config.lengths, "depths": config.depths,
            "grid": grid.tolist(), "cells": cells, "haystack": source, "seconds": time.perf_counter() - t0,
            "config": {k: cfg[k] for k in ("samples", "needles", "languages", "value_digits", "seed")}}


def save_result(result: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    tmp.replace(path)
    return path
