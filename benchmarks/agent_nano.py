"""Held-out agentic pass rate of a post-trained model, with and without the sub-agents (issue 18 target).

The synthetic SQLite environments (`kexa.agent.envs`, held-out split: tool-use SFT on the train split never
saw them) run through kexa.agent's loop on the model in-process (kexa.agent.client.EngineClient), at the
report's sampling temperature, twice:
- without sub-agents: the whole trajectory stays in the context;
- with sub-agents: the trajectory compressor every `--compress-every` tool steps and the summarizer on tool
  results over `--summarize-over` tokens (the model itself in both sub-agent roles, as K-EXAONE does);
and against the scripted reference solver on the same tasks (the ceiling; 1.0 by the solvability filter).
Writes benchmarks/results/agent_nano.json: pass rate with its 95% Wilson interval, steps, finish reasons,
compressions and summaries per setting, and the tool-call validity of the calls made.

    PYTHONPATH=src .venv/bin/python benchmarks/agent_nano.py --model runs/speedrun/model --n 24
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="post-trained model folder (e.g. the speedrun's RUN/model)")
    ap.add_argument("--n", type=int, default=24, help="held-out tasks")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--max-steps", type=int, default=6)
    ap.add_argument("--compress-every", type=int, default=2)
    ap.add_argument("--summarize-over", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="agent_nano")
    args = ap.parse_args()

    import torch

    from kexa.agent.cli import run_tasks
    from kexa.agent.client import EngineClient
    from kexa.agent.envs import generate, solve
    from kexa.agent.loop import AgentConfig
    from kexa.eval.niah import wilson_interval
    from kexa.eval.suites.agentic import call_is_valid
    from kexa.infer.engine import Engine
    from kexa.model.transformer import KExaone
    from kexa.tokenizer import Tokenizer

    torch.set_num_threads(args.threads)
    drawn, tasks = 4 * args.n, []
    while len(tasks) < args.n:  # ~20% of generated tasks are held out
        tasks = [t for t in generate(drawn, args.seed)[0] if t.get("split") == "heldout"][: args.n]
        drawn *= 2
    solver = sum(solve(t)[0] for t in tasks) / len(tasks)

    model, tok = KExaone.from_pretrained(args.model), Tokenizer.from_pretrained(args.model)
    client = EngineClient(Engine(model), tok)
    settings = {"without_subagents": {"compress_every": 0, "summarize_over": 0},
                "with_subagents": {"compress_every": args.compress_every, "summarize_over": args.summarize_over}}
    out: dict = {"model": str(args.model), "n": len(tasks), "solver_pass_rate": solver,
                 "domains": sorted({t["domain"] for t in tasks}), "langs": sorted({t["lang"] for t in tasks}),
                 "temperature": args.temperature, "max_steps": args.max_steps, "max_tokens": args.max_tokens}
    for name, extra in settings.items():
        config = AgentConfig(max_steps=args.max_steps, temperature=args.temperature, max_tokens=args.max_tokens,
                             sub_max_tokens=args.max_tokens, **extra)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            summary = run_tasks(client, tasks, Path(d), config)
            records = [json.loads(line) for line in (Path(d) / "trajectories.jsonl").read_text().splitlines()]
        by_id = {t["id"]: t for t in tasks}
        calls = [call_is_valid(e["name"], e["arguments"], by_id[r["id"]]["tools"])
                 for r in records for e in r["events"] if e["type"] == "tool"]
        passed = sum(r["passed"] for r in records)
        out[name] = {**{k: summary[k] for k in ("pass_rate", "steps_mean", "compressions", "compression_fallbacks",
                                                "summaries", "finish", "peak_prompt_tokens")},
                     "interval": list(wilson_interval(passed, len(records))), "tool_calls": len(calls),
                     "tool_call_validity": sum(calls) / len(calls) if calls else None,
                     "seconds": time.perf_counter() - t0, **extra}
        print(f"{name}: pass rate {summary['pass_rate']:.3f} {out[name]['interval']} steps {summary['steps_mean']:.2f} "
              f"calls {len(calls)} valid {out[name]['tool_call_validity']}", flush=True)
    print(f"solver pass rate {solver:.3f}; with / without sub-agents: "
          f"{out['with_subagents']['pass_rate']:.3f} / {out['without_subagents']['pass_rate']:.3f}")
    write_result(args.out, out)


if __name__ == "__main__":
    main()
