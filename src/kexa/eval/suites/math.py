"""Math: the final answer (after `</think>`) checked for mathematical equivalence by math-verify.

Data: `data=FILE` in GSM8K format ({"question", "answer": "... #### 42"}) or MATH format ({"problem",
"solution": "... \\boxed{...}"} or {"problem", "answer"}); without a file, `kexa.tasks` held-out problems of
the math families (math: fractions/equations, arith, word problems) in the six languages.

Prompt: the problem followed by "Please reason step by step, and put your final answer within \\boxed{}." (the
DeepSeek/Qwen math template used by reasoning-model reports; the K-EXAONE report's exact wording is not in
our reference notes). Scoring: `kexa.tasks.verify.math_equal(gold, answer)` — math-verify's parse + verify,
bounded in time; "1,234" = "1234.0", "\\frac{1}{2}" = "0.5", a boxed answer preferred to other numbers.
"""

from __future__ import annotations

import random

from .base import Suite, read_jsonl, take

TEMPLATE = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
GENERATED_TASKS = ("math", "arith", "word")


def gold_answer(row: dict, where: str) -> tuple[str, str]:
    """(problem, gold answer) of a GSM8K- or MATH-format row."""
    problem = row.get("question", row.get("problem"))
    if not isinstance(problem, str):
        raise ValueError(f"{where}: need 'question' (GSM8K) or 'problem' (MATH)")
    if "answer" in row and isinstance(row["answer"], (str, int, float)):
        answer = str(row["answer"])
        if "####" in answer:  # GSM8K: the worked solution, then "#### 42"
            answer = answer.split("####")[-1].strip().replace(",", "")
        return problem, answer
    if isinstance(row.get("solution"), str):
        boxed = last_boxed(row["solution"])
        if boxed is None:
            raise ValueError(f"{where}: the solution has no \\boxed{{...}} answer")
        return problem, boxed
    raise ValueError(f"{where}: need 'answer' or a 'solution' with \\boxed{{}}")


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (balanced braces), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


class Math(Suite):
    name = "math"
    max_tokens = 4096

    def __init__(self, data: str | None = None, per_cell: int = 6, seed: int = 0):
        self.data, self.per_cell, self.seed = data, int(per_cell), int(seed)
        if data is None:
            self._rows = self._generated()
        else:
            rows = read_jsonl(data)
            self._rows = []
            for i, row in enumerate(rows):
                problem, gold = gold_answer(row, f"{data}:{i + 1}")
                self._rows.append({"id": str(row.get("id", i)), "problem": problem, "gold": gold, "subject": ""})

    def _generated(self) -> list[dict]:
        import kexa.tasks
        out = []
        for name in GENERATED_TASKS:
            task = kexa.tasks.get(name)
            for lang in kexa.tasks.LANGS:
                rng = random.Random(f"math:{self.seed}:{name}:{lang}")
                for k in range(self.per_cell):
                    ex = task.sample(rng, lang=lang, split="heldout")
                    out.append({"id": f"{name}-{lang}-{k}", "problem": ex.messages[-1]["content"], "gold": ex.answer,
                                "subject": f"{name}/{lang}"})
        return sorted(out, key=lambda r: int(r["id"].rsplit("-", 1)[1]))  # interleaved: a --limit covers every cell

    def settings(self) -> dict:
        return {"data": self.data or f"generated from kexa.tasks held-out ({', '.join(GENERATED_TASKS)})",
                "template": TEMPLATE, "verifier": "math-verify via kexa.tasks.verify.math_equal"}

    def items(self, limit):
        return [{**row, "messages": [{"role": "user", "content": TEMPLATE.format(problem=row["problem"])}]}
                for row in take(self._rows, limit)]

    def score(self, items, replies):
        from kexa.tasks.verify import math_equal
        out = []
        for it, r in zip(items, replies):
            answer = final_math_answer(r.content)
            out.append({"accuracy": float(bool(answer) and math_equal(_as_math(it["gold"]), answer)),
                        "extracted": answer[-200:]})
        return out


def final_math_answer(content: str) -> str:
    """The text math-verify should read: the last \\boxed{} written as $\\boxed{...}$ when there is one
    (math-verify prefers boxed answers), else the reply itself (its last expression is taken)."""
    boxed = last_boxed(content or "")
    return f"$\\boxed{{{boxed}}}$" if boxed is not None else (content or "").strip()


def _as_math(gold: str) -> str:
    return gold if "$" in gold or "\\" in gold else f"${gold}$"

