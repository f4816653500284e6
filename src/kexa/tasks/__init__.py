"""`kexa.tasks`: procedurally generated, verifiable tasks in six languages — the data that SFT, RL,
preference learning, agents and evaluation share.

    import random, kexa.tasks
    task = kexa.tasks.get("arith")                       # kexa.tasks.names() lists the registry
    ex = task.sample(random.Random(0), lang="ko", tier=1)  # split="train" (default) or "heldout"
    ex.messages, ex.answer, ex.reasoning, ex.meta          # prompt turns, final answer, trace, facts
    task.reward(ex, "<think>\\n…\\n</think>\\n\\n95")      # 1.0 / 0.0, reads the answer after </think>

For SFT (both modes), the target dialogue is `ex.conversation(reasoning=True|False)`: the prompt turns
plus an assistant turn whose `content` is the answer and, in reasoning mode, whose
`reasoning_content` is the trace — the K-EXAONE chat template reads reasoning from that field (it
never parses `<think>` out of `content`). Render it with `enable_thinking=reasoning` and
`tools=ex.tools`; `ex.encode(tokenizer, reasoning)` does exactly that through
`kexa.tokenizer.chat.encode_chat` and returns ids plus the assistant-token mask. Rendered, the
assistant's text is `<think>\\n{reasoning}\\n</think>\\n\\n{answer}<|endofturn|>` in reasoning mode and
`<think>\\n\\n</think>\\n\\n{answer}<|endofturn|>` without (`ex.reference(reasoning)` is that reply
without the end-of-turn token). Tool-use examples carry `ex.tools`, their answer is the expected
`<tool_call>…</tool_call>`, and `ex.after` holds the tool result and the final reply that complete
the dialogue (included by `conversation`).

As dataset rows (`to_row`/`from_row`) the examples feed `datasets` and TRL; `reward_function` is the
verifiers behind TRL's reward signature `f(prompts, completions, **columns)`.

Every task has tier 1 and the languages ko, en, es, de, ja, vi; `sample(rng, lang=None)` picks a
language at random. Same rng state, same example. Train and held-out splits are disjoint by
construction (see `base.split_of`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from .arith import Arith
from .base import LANGS, SPLITS, Example, Task, split_of
from .convert import Convert
from .instruct import Instruct
from .lookup import Lookup
from .math_problems import MathProblems
from .rows import from_row, reward_function, to_row
from .sorting import Sorting
from .strings import Strings
from .tool import ToolUse
from .word import Word

_TASKS = (Arith(), Word(), MathProblems(), Sorting(), Strings(), Convert(), Lookup(), Instruct(), ToolUse())
_REGISTRY: dict[str, Task] = {t.name: t for t in _TASKS}


def names() -> list[str]:
    """The registered task names."""
    return sorted(_REGISTRY)


def get(name: str) -> Task:
    """The task called `name`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(names())}") from None


def register(task: Task) -> Task:
    """Add (or replace) a task in the registry, e.g. `Lookup(pairs={1: 4096}, name="lookup_4k")`."""
    if not task.name:
        raise ValueError("a task needs a name")
    _REGISTRY[task.name] = task
    return task


def examples(name: str, n: int, seed: int = 0, langs=LANGS, tiers=(1,), split: str = "train") -> Iterator[Example]:
    """`n` examples of one task, languages and tiers drawn uniformly; deterministic in `seed`."""
    task, rng = get(name), random.Random(seed)
    for _ in range(n):
        yield task.sample(rng, lang=rng.choice(list(langs)), tier=rng.choice(list(tiers)), split=split)


__all__ = [
    "Example",
    "Task",
    "LANGS",
    "SPLITS",
    "get",
    "names",
    "register",
    "examples",
    "split_of",
    "to_row",
    "from_row",
    "reward_function",
]
