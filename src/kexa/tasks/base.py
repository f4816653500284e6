"""The shape every task shares: an `Example`, the `Task` base class, and the train/held-out split.

A task generates a problem from a `random.Random` (so a seed fixes it), in one of six languages and at
a difficulty tier, with its reference answer and a programmatic step-by-step `reasoning` trace; its
`reward` reads a model reply (the text generated after the generation prompt) and returns 1.0 or 0.0.

Splits are disjoint by construction: every problem has a canonical identity (`meta["key"]`, e.g. the
sorted operands of a sum, the looked-up key, the string to reverse); a stable hash of it puts the
problem in "heldout" (about `HELDOUT_SHARE` of all problems) or in "train", and `sample` redraws until
the problem belongs to the requested split. A training run therefore never sees a held-out problem,
whatever its seed.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import Any

from kexa.tokenizer.chat import parse_response

LANGS = ("ko", "en", "es", "de", "ja", "vi")
SPLITS = ("train", "heldout")
HELDOUT_SHARE = 0.2  # fraction of problem identities reserved for evaluation
MAX_DRAWS = 10_000  # a generator that cannot hit a split in this many draws is a bug
_INT = re.compile(r"-?\d+")


def split_of(key: str) -> str:
    """The split a problem identity belongs to (stable across processes and Python versions)."""
    h = int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")
    return "heldout" if (h % 10_000) < HELDOUT_SHARE * 10_000 else "train"


@dataclass
class Example:
    """One verifiable problem.

    messages  the prompt turns (`[{"role": "user", "content": ...}]`, a system turn where the task has one)
    answer    the reference final answer: what the reply holds after `</think>` (a tool-use example's
              answer is the `<tool_call>…</tool_call>` text of the expected call)
    reasoning the programmatic step-by-step trace (what the `<think>` block holds in reasoning mode)
    meta      task, lang, tier, split, key (the problem identity) and what the verifier needs; JSON-able
    tools     tool declarations (OpenAI function schema) for the chat template, or None
    after     turns that follow the answer turn in a full dialogue (a tool result and the final reply)
    """

    messages: list[dict[str, Any]]
    answer: str
    reasoning: str
    meta: dict[str, Any]
    tools: list[dict[str, Any]] | None = None
    after: list[dict[str, Any]] = field(default_factory=list)

    def reference(self, reasoning: bool = True) -> str:
        """The reference reply as the model would write it: `<think>\\n{reasoning}\\n</think>\\n\\n{answer}`."""
        return f"<think>\n{self.reasoning if reasoning else ''}\n</think>\n\n{self.answer}"

    def conversation(self, reasoning: bool = True) -> list[dict[str, Any]]:
        """The SFT target dialogue: prompt turns + the assistant's answer turn (+ `after` turns).

        Reasoning is carried the way the chat template reads it: the `reasoning_content` field of the
        assistant message (never inline `<think>` tags in `content`). Render the result with
        `enable_thinking=reasoning` and `tools=self.tools` — `encode(tokenizer, reasoning)` does.
        With `reasoning=False` the assistant turns carry no reasoning and the template writes the
        empty think block of the non-reasoning mode.
        """
        parsed = parse_response(self.answer)
        turn: dict[str, Any] = {"role": "assistant", "content": parsed["content"]}
        if parsed["tool_calls"]:
            turn["tool_calls"] = parsed["tool_calls"]
        if reasoning:
            turn["reasoning_content"] = self.reasoning
        out = [dict(m) for m in self.messages] + [turn] + [dict(m) for m in self.after]
        if not reasoning:  # no reasoning anywhere (the template would drop it too)
            for m in out:
                m.pop("reasoning_content", None)
        return out

    def encode(self, tokenizer, reasoning: bool = True):
        """`kexa.tokenizer.chat.encode_chat` of `conversation(reasoning)`: ids + assistant-token mask."""
        from kexa.tokenizer.chat import encode_chat

        return encode_chat(tokenizer, self.conversation(reasoning), tools=self.tools, enable_thinking=reasoning)


class Task:
    """A family of verifiable problems. Subclasses set `name`, `tiers` and implement `generate`/`score`."""

    name: str = ""
    tiers: tuple[int, ...] = (1,)
    langs: tuple[str, ...] = LANGS

    def generate(self, rng: random.Random, lang: str, tier: int) -> Example:
        """One problem of any split (the base class picks the split by its `meta["key"]`)."""
        raise NotImplementedError

    def score(self, example: Example, content: str, reply: dict[str, Any]) -> float:
        """Reward of the final answer `content` (text after `</think>`, tool calls removed); `reply` is
        the whole `parse_response` dict (reasoning, tool calls)."""
        raise NotImplementedError

    def corrupt(self, example: Example, rng: random.Random) -> str:
        """A plausible wrong final answer (tests; rejected replies for preference data): the answer with
        its last integer changed."""
        nums = list(_INT.finditer(example.answer))
        if not nums:
            raise NotImplementedError(f"task {self.name!r} has no corruption for {example.answer!r}")
        m = nums[-1]
        wrong = int(m.group()) + rng.choice([-1, 1]) * rng.randint(1, 9)
        return example.answer[: m.start()] + str(wrong) + example.answer[m.end():]

    def sample(self, rng: random.Random, lang: str | None = "en", tier: int = 1, split: str = "train") -> Example:
        """A problem of `split` in `lang` (None: a random one of the six) at `tier`; deterministic in `rng`."""
        if split not in SPLITS:
            raise ValueError(f"task {self.name!r}: split must be one of {SPLITS}, got {split!r}")
        if tier not in self.tiers:
            raise ValueError(f"task {self.name!r}: tier must be one of {self.tiers}, got {tier!r}")
        if lang is None:
            lang = rng.choice(self.langs)
        if lang not in self.langs:
            raise ValueError(f"task {self.name!r}: lang must be one of {self.langs}, got {lang!r}")
        for _ in range(MAX_DRAWS):
            ex = self.generate(rng, lang, tier)
            if split_of(ex.meta["key"]) == split:
                ex.meta.update(task=self.name, lang=lang, tier=tier, split=split)
                return ex
        raise RuntimeError(f"task {self.name!r} tier {tier}: no {split} problem in {MAX_DRAWS} draws")

    def reward(self, example: Example, response_text: str) -> float:
        """1.0 if the reply's final answer (after `</think>`) is correct, else 0.0."""
        reply = parse_response(response_text)
        content = reply["content"]
        if not content and not reply["tool_calls"]:
            return 0.0
        return float(self.score(example, content, reply))


def pick(rng: random.Random, phrasings: dict[str, list[str]], lang: str, **fields) -> str:
    """One of a language's phrasings, filled in."""
    return rng.choice(phrasings[lang]).format(**fields)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]
