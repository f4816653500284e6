"""Examples as dataset rows, and the task rewards as a TRL reward function.

A row is what TRL and `datasets` hold: `prompt` (the prompt turns, conversational), `answer`,
`task`, and `example` (the whole Example as JSON, so a reward can be recomputed anywhere).
`reward_function` has TRL's signature — `f(prompts, completions, **columns) -> list[float | None]`,
the dataset's columns arriving as keyword lists — so the same verifiers drive kexa's RL and TRL's
`GRPOTrainer` peer. A row without an `example` gets None (not applicable), as TRL expects.

    ds = datasets.Dataset.from_list([to_row(ex) for ex in kexa.tasks.examples("arith", 100)])
    GRPOTrainer(..., train_dataset=ds, reward_funcs=[reward_function])
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from .base import Example


def to_row(ex: Example) -> dict[str, Any]:
    return {"prompt": ex.messages, "answer": ex.answer, "task": ex.meta["task"],
            "example": json.dumps(asdict(ex), ensure_ascii=False)}


def from_row(row: dict[str, Any]) -> Example:
    return Example(**json.loads(row["example"]))


def _text(completion: Any) -> str:
    """A TRL completion: a string, or a list of message dicts (conversational) — their text joined."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion if isinstance(m, dict))


def reward_function(prompts, completions, example=None, **columns) -> list[float | None]:
    """TRL-signature reward: each completion scored by its row's task verifier."""
    from . import get

    out: list[float | None] = []
    for i, completion in enumerate(completions):
        if example is None or example[i] is None:
            out.append(None)
            continue
        ex = Example(**json.loads(example[i]))
        out.append(get(ex.meta["task"]).reward(ex, _text(completion)))
    return out
