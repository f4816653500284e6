"""Synthetic tool-use environments: how many drawn tasks the solvability filter keeps and why it drops the
others (per domain), the reference solver's pass rate on the kept tasks, the held-out share, and the cost
of generation and verification.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/agent_envs.py --n 200
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from kexa.agent.domains import DOMAINS
from kexa.agent.envs import draw_task, generate, verify


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/agent_envs.json")
    args = ap.parse_args()

    t0 = time.perf_counter()
    tasks, counts, _ = generate(args.n, args.seed)
    gen_s = time.perf_counter() - t0
    per_domain = {}
    for d in DOMAINS:  # one domain at a time, to attribute the drops (same filter, same seed)
        _, c, _ = generate(args.n // 4, args.seed, propose=lambda r, _dom, lang, i, d=d: draw_task(r, d, lang, i))
        per_domain[d] = {k: c[k] for k in ("drawn", "kept", "unsolvable", "ambiguous")}
    t0 = time.perf_counter()
    v = verify(tasks)
    verify_s = time.perf_counter() - t0
    result = {"benchmark": "agent_envs", "n": args.n, "seed": args.seed, "counts": counts,
              "kept_share": round(counts["kept"] / counts["drawn"], 4), "per_domain": per_domain,
              "types": dict(Counter(f"{t['domain']}/{t['type']}" for t in tasks)),
              "langs": dict(Counter(t["lang"] for t in tasks)),
              "heldout_share": round(sum(t["split"] == "heldout" for t in tasks) / len(tasks), 4),
              "verify_pass_rate": v["pass_rate"], "generate_s": round(gen_s, 2), "verify_s": round(verify_s, 2)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", "utf-8")
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
