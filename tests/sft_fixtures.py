"""Shared SFT test fixtures: a small BPE tokenizer with the K-EXAONE specials and a verifiable
addition task with the kexa.tasks interface (sample / reward / Example.conversation), so the SFT
tests do not depend on the task suite's contents."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from kexa.tokenizer import parse_response, train_bpe

PROMPTS = {"en": "What is {a} + {b}?", "ko": "{a} 더하기 {b}는 얼마입니까?"}


@dataclass
class Example:
    messages: list[dict[str, Any]]
    answer: str
    reasoning: str
    meta: dict[str, Any]
    tools: list[dict] | None = None
    after: list[dict] = field(default_factory=list)

    def conversation(self, reasoning: bool = True) -> list[dict[str, Any]]:
        turn = {"role": "assistant", "content": self.answer}
        if reasoning:
            turn["reasoning_content"] = self.reasoning
        return [dict(m) for m in self.messages] + [turn]


class AddTask:
    """a + b with `tier` extra digits; held-out problems have an odd a (train: even a). tier 9 makes
    long reasoning traces (to overflow short rows)."""

    name = "add"
    tiers = (1, 2, 9)
    langs = ("en", "ko")

    def sample(self, rng: random.Random, lang: str = "en", tier: int = 1, split: str = "train") -> Example:
        a, b = rng.randrange(10 ** tier), rng.randrange(10 ** tier)
        a += (a % 2) != (split == "heldout")
        steps = " ".join([f"{a} plus {b} is {a + b}."] * (tier if tier > 2 else 1))
        return Example([{"role": "user", "content": PROMPTS[lang].format(a=a, b=b)}], str(a + b), steps,
                       {"task": "add", "lang": lang, "tier": tier, "split": split, "key": f"{a}+{b}"})

    def reward(self, ex: Example, text: str) -> float:
        return float(parse_response(text)["content"].strip() == ex.answer)


def make_tokenizer(tmp_path, vocab_size: int = 700):
    text = " ".join(PROMPTS.values()) + " plus is. 0123456789 " + " ".join(str(i) for i in range(300))
    path = tmp_path / "corpus.txt"
    path.write_text((text + "\n") * 50, "utf-8")
    return train_bpe([str(path)], vocab_size=vocab_size)
