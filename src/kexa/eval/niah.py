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
- `needle = "novel"` phrases the needle, question and answer prefix unlike any training template
  (`NOVEL_TEMPLATES`: "At the old archive, Tulmorvin was given the access code 5302." in six
  languages, no "secret number"): the synthetic training data shares the "template" needle's
  sentences, so a model can score on it by matching the trained format; the novel needle shows
  retrieval of a fact it was never shown the phrasing of;
- retrieval by greedy generation through the inference engine (`kexa.infer.Engine`, chunked
  prefill and the sliding-window ring cache), exact match on the value (`answer_of`: the leading
  digits of the generated text); `digit_accuracy` (digits right in place) is reported beside it as
  partial credit - a chance-level model scores ~0.1 there, a model that starts to retrieve more;
- every (length, depth) cell averages `samples` haystacks (different offsets, keys and values);
  all prompts of one length have one length, so the engine prefills them as one batch;
- every accuracy comes with its 95% Wilson score interval (Wilson 1927; `wilson_interval`): a cell
  of 10 cases at 0.9 is [0.60, 0.98], so a gate at 0.9 needs tens of cases per cell to mean much.
Deterministic given the seed: the same model, tokenizer, haystack and seed give the same grid.

`evaluate_niah` takes a model, or any `retrieve(prompts, max_new_tokens) -> token lists` callable
(tests drive it with stubs that know or do not know the answer). The result is a JSON-ready dict:
`accuracy` maps each length (as a string) to its mean accuracy, `interval` to its Wilson interval
over all the length's cases, `grid` is lengths x depths, `cells` lists every case's answer (and each
cell's interval). `plot_heatmap` (kexa.plots) draws the grid (depth x length) as a PNG.

    kexa eval niah --model runs/ext/model --lengths 256,1024,2048 --depths 0,0.5,1 --json
    kexa eval niah --model runs/ext/model --lengths 1024 --samples 50 --needle novel --json
"""

from __future__ import annotations

import json
import math
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

# Needles phrased unlike every sentence of kexa.data.synthetic.TEMPLATES (no "secret number", another
# verb, the value inside a longer sentence in some languages): same fields, so the same builder uses
# them. The fact is prefix + " " + value + suffix; the prompt ends with the question and the prefix.
NOVEL_TEMPLATES: dict[str, dict[str, str]] = {
    "en": {"prefix": "At the old archive, {key} was given the access code", "suffix": ".",
           "question": "Which access code was {key} given at the old archive?"},
    "ko": {"prefix": "오래된 기록 보관소에서 {key}에게 주어진 출입 코드는", "suffix": "이었다.",
           "question": "오래된 기록 보관소에서 {key}에게 주어진 출입 코드는 무엇이었나?"},
    "es": {"prefix": "En el viejo archivo, a {key} le dieron el código de acceso", "suffix": ".",
           "question": "¿Qué código de acceso le dieron a {key} en el viejo archivo?"},
    "de": {"prefix": "Im alten Archiv bekam {key} den Zugangscode", "suffix": ".",
           "question": "Welchen Zugangscode bekam {key} im alten Archiv?"},
    "ja": {"prefix": "古い書庫で{key}に渡された入館コードは", "suffix": "だった。",
           "question": "古い書庫で{key}に渡された入館コードは何でしたか？"},
    "vi": {"prefix": "Tại kho lưu trữ cũ, {key} được cấp mã ra vào", "suffix": ".",
           "question": "Tại kho lưu trữ cũ, {key} được cấp mã ra vào nào?"},
}
NEEDLES = {"template": TEMPLATES, "novel": NOVEL_TEMPLATES}


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion: unlike the normal approximation it
    stays inside [0, 1] and is honest at 0/n and n/n, which small NIAH cells often are."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at 0/n and n/n the bound is exactly 0 (1); floating point would leave ~1e-17 on the wrong side of p
    return (0.0 if successes == 0 else max(0.0, centre - half)), (1.0 if successes == n else min(1.0, centre + half))


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
    needle: str = "template"  # "template": the training data's sentences | "novel": NOVEL_TEMPLATES

    def __post_init__(self) -> None:
        errors = []
        if self.needle not in NEEDLES:
            errors.append(f"needle must be one of {sorted(NEEDLES)}, got {self.needle!r}")
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
        t = NEEDLES[self.config.needle][lang]
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
    hit_counts = [0] * len(config.lengths)
    per_length = len(config.depths) * config.samples  # cases of one length
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
            hit_counts[li] += sum(hits)
            cells.append({"length": length, "depth": depth, "accuracy": grid[li, di], "digits": digits[li, di],
                          "n": len(hits), "interval": list(wilson_interval(sum(hits), len(hits))),
                          "cases": [{"lang": c.lang, "key": c.key, "value": c.value, "needle_at": c.needle_at,
                                     "answer": text, "correct": h} for (c, text), h in zip(mine, hits)]})
        if progress is not None:
            progress(f"niah length {length}: accuracy {grid[li].mean():.3f} ({time.perf_counter() - t0:.1f}s)")
    cfg = asdict(config)
    task = ("niah_multikey" if config.needles > 1 else "niah_single") + ("_novel" if config.needle == "novel" else "")
    return {"task": task,
            "accuracy": {str(n): float(grid[i].mean()) for i, n in enumerate(config.lengths)},
            "interval": {str(n): list(wilson_interval(hit_counts[i], per_length)) for i, n in enumerate(config.lengths)},
            "cases_per_length": per_length, "cases_per_cell": config.samples,
            "mean_accuracy": float(grid.mean()),
            "digit_accuracy": {str(n): float(digits[i].mean()) for i, n in enumerate(config.lengths)}, "lengths": config.lengths, "depths": config.depths,
            "grid": grid.tolist(), "cells": cells, "haystack": source, "seconds": time.perf_counter() - t0,
            "config": {k: cfg[k] for k in ("samples", "needles", "languages", "value_digits", "seed", "needle")}}


def save_result(result: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    tmp.replace(path)
    return path
