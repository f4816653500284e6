"""How fast `kexa.tasks` generates examples and scores replies, per task (what RL rollouts and the
evaluation harness pay per sample), plus the shape of the data: prompt and trace lengths, the measured
held-out share of drawn problems, and how many distinct prompt skeletons (numbers and the asked
key/word blanked) 150 draws per language give.

Scoring is timed on the main thread (math-verify's own SIGALRM timeout) and from a worker thread
(the bounded path: timeouts off, our helper-thread bound on), on the reference reply and a corrupted one.

    .venv/bin/python benchmarks/tasks_throughput.py --n 200
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kexa.tasks as T
from kexa.tasks.base import split_of


def _skeleton(ex) -> str:
    """A prompt with its numbers and the looked-up key / edited word blanked, and only the first and
    last line of a context kept: close to the phrasing it was written from (names, items, units and
    the order of events still count as variety)."""
    lines = ex.messages[0]["content"].split("\n")
    text = lines[0] + " " + lines[-1]
    for k in ("asked", "word"):
        if ex.meta.get(k):
            text = text.replace(ex.meta[k], "W")
    return re.sub(r"\d+", "#", text)


def measure(name: str, n: int, seed: int) -> dict:
    task, rng = T.get(name), random.Random(seed)
    t0 = time.perf_counter()
    exs = [task.sample(rng, lang=T.LANGS[i % 6], tier=1) for i in range(n)]
    gen_s = time.perf_counter() - t0
    replies = [(ex, ex.reference()) for ex in exs]
    replies += [(ex, "<think>\n</think>\n\n" + task.corrupt(ex, rng)) for ex in exs]
    t0 = time.perf_counter()
    main_scores = [task.reward(ex, r) for ex, r in replies]
    main_s = time.perf_counter() - t0
    with ThreadPoolExecutor(1) as pool:  # the same replies from a worker thread (no SIGALRM there)
        t0 = time.perf_counter()
        thread_scores = pool.submit(lambda: [task.reward(ex, r) for ex, r in replies]).result()
        thread_s = time.perf_counter() - t0
    assert threading.current_thread() is threading.main_thread()
    keys = [task.generate(random.Random(seed + i), "en", 1).meta["key"] for i in range(n)]
    phrasings = {lang: len({_skeleton(task.sample(random.Random(seed * 1000 + i), lang=lang)) for i in range(150)})
                 for lang in T.LANGS}
    return {
        "examples_per_s": round(n / gen_s, 1),
        "rewards_per_s_main_thread": round(len(replies) / main_s, 1),
        "rewards_per_s_worker_thread": round(len(replies) / thread_s, 1),
        "reference_accuracy": sum(main_scores[:n]) / n, "corrupted_accuracy": sum(main_scores[n:]) / n,
        "thread_scores_equal": main_scores == thread_scores,
        "heldout_share_of_drawn_problems": round(sum(split_of(k) == "heldout" for k in keys) / n, 3),
        "prompt_chars_mean": round(statistics.mean(len(ex.messages[-1]["content"]) for ex in exs), 1),
        "reasoning_chars_mean": round(statistics.mean(len(ex.reasoning) for ex in exs), 1),
        "distinct_prompt_skeletons_in_150": phrasings,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="examples per task")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/tasks_throughput.json")
    args = ap.parse_args()
    T.get("instruct").reward(T.get("instruct").sample(random.Random(0)), "warm up lingua")  # one-time model load
    results = {}
    for name in T.names():
        results[name] = measure(name, args.n, args.seed)
        print(name, json.dumps(results[name], ensure_ascii=False))
    out = {"n_per_task": args.n, "tier": 1, "seed": args.seed, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", "utf-8")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
