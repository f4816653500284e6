"""The continuous-batching scheduler's step, in process (no HTTP): where a 16-request burst's time goes.

Same nano-shaped model folder as benchmarks/serve.py (random weights, fp32, MTP off), the same 16 chat
prompts, greedy, `--max-tokens` each, submitted at once to a `Scheduler` (one torch thread). For each
configuration, alternating `--reps` times (the machine is shared: medians, ratios within one run):
- wall, aggregate tokens/s, median time to first token (submit -> first token event);
- decode steps: median step time, and the part spent in the model's decode forward (`Engine._decode`),
  so step - forward = the scheduler's own per-step Python (building the batch, sampling, emitting);
- the burst's prefill: steps until every request had its first token, under the `step_tokens` budget.
Configurations: eager with the model's 16K-token context (the server's default cache) and with a
256-token one; `step_tokens` 512 vs 2048; `--compile` (cache 256 and 16K), where the first run
includes the compilation and later runs show whether a new cache object recompiles (dynamo frames).

    .venv/bin/python benchmarks/serve_step.py            # -> benchmarks/results/serve_step.json
    .venv/bin/python benchmarks/serve_step.py --no-compile --reps 1
    .venv/bin/python benchmarks/serve_step.py --profile-only   # adds "decode_profile" to the JSON
With --profile (or --profile-only), one batch-16 decode step of the model is profiled
(torch.profiler, 10 steps after 5 warm-up): the top aten ops by self CPU time per step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from serve import build_folder  # noqa: E402  (one model folder recipe for both benchmarks)


def burst(engine, prompts, max_tokens: int, **sched_kw) -> dict:
    from kexa.infer import SamplingParams
    from kexa.infer.scheduler import Request, Scheduler

    sched = Scheduler(engine, max_batch=len(prompts), **sched_kw)
    steps, forwards = [], []
    real_step, real_decode = sched.step, engine._decode

    def step():
        t = time.perf_counter()
        forwards.append(0.0)
        real_step()
        steps.append(time.perf_counter() - t)

    def decode(*a):
        t = time.perf_counter()
        out = real_decode(*a)
        forwards[-1] += time.perf_counter() - t
        return out

    sched.step, engine._decode = step, decode
    first, left, done = {}, [len(prompts)], threading.Event()

    def on(i):
        def f(ev):
            first.setdefault(i, (time.perf_counter(), len(steps)))
            if ev.finish_reason:
                left[0] -= 1
                if left[0] == 0:
                    done.set()
        return f

    params = SamplingParams(max_new_tokens=max_tokens, temperature=0)
    t0 = time.perf_counter()
    try:
        for i, p in enumerate(prompts):
            sched.submit(Request(p, params), on(i))
        sched.start()
        assert done.wait(1800), sched.last_error
        wall = time.perf_counter() - t0
    finally:
        sched.stop()
        engine._decode = real_decode
    prefill_steps = max(s for _, s in first.values()) + 1
    decode_steps = [(s, f) for s, f in zip(steps[prefill_steps:], forwards[prefill_steps:]) if f > 0]
    return {"wall_s": round(wall, 3), "tokens_per_s": round(len(prompts) * max_tokens / wall, 1),
            "median_ttft_s": round(statistics.median(t - t0 for t, _ in first.values()), 4),
            "steps_until_all_first_tokens": prefill_steps,
            "decode_step_ms": round(1e3 * statistics.median(s for s, _ in decode_steps), 2),
            "decode_forward_ms": round(1e3 * statistics.median(f for _, f in decode_steps), 2),
            "scheduler_overhead_ms": round(1e3 * statistics.median(s - f for s, f in decode_steps), 2)}


@torch.inference_mode()
def profile_decode(model, batch: int, context: int, steps: int = 10) -> dict:
    """Top ops of a plain decode step over `batch` rows at ~40 positions (self CPU ms per step)."""
    from torch.profiler import profile

    from kexa.infer.cache import KVCache

    cache = KVCache(model.config, batch, context, include_mtp=False)
    pos = torch.arange(40).expand(batch, -1)
    cache.begin(pos)
    model(torch.randint(0, model.config.vocab_size, (batch, 40)), pos, cache=cache)
    cache.commit()

    def step():
        p = cache.lengths[:, None].clone()
        cache.begin(p)
        model(torch.randint(0, model.config.vocab_size, (batch, 1)), p, cache=cache)
        cache.commit(torch.zeros(batch, dtype=torch.long))  # stay at 40 positions

    for _ in range(5):
        step()
    with profile() as prof:
        for _ in range(steps):
            step()
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)
    return {"batch": batch, "step_ms": round(total / steps / 1e3, 2),
            "top_ops": [{"op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / steps / 1e3, 2),
                         "calls_per_step": e.count / steps} for e in ops[:8]]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--profile", action="store_true", help="also profile one batch decode step")
    p.add_argument("--profile-only", action="store_true", help="only the profile, merged into --json")
    p.add_argument("--json", default=str(ROOT / "benchmarks/results/serve_step.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    from kexa import KExaone
    from kexa.infer import Engine
    from kexa.tokenizer import Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(Path(tmp))
        model, tok = KExaone.from_pretrained(folder), Tokenizer.from_pretrained(folder)
    prompts = [tok.encode_chat([{"role": "user", "content": f"request {i}: tell me about the quick brown fox and "
                                                            f"the lazy dog"}], add_generation_prompt=True).ids
               for i in range(args.clients)]
    if args.profile or args.profile_only:
        prof = profile_decode(model, args.clients, 16384)
        print("decode profile:", json.dumps(prof), flush=True)
        if args.profile_only:
            path = Path(args.json)
            out = json.loads(path.read_text()) if path.exists() else {}
            out["decode_profile"] = prof
            path.write_text(json.dumps(out, indent=2) + "\n")
            print("wrote", args.json)
            return 0
    eager = Engine(model)
    configs = {"eager, context 16384, step_tokens 512 (server default)": (eager, dict(step_tokens=512)),
               "eager, context 16384, step_tokens 2048": (eager, dict(step_tokens=2048)),
               "eager, context 256, step_tokens 512": (eager, dict(step_tokens=512, max_len=256))}
    runs: dict[str, list] = {name: [] for name in configs}
    burst(eager, prompts[:2], 4)  # warm-up
    for rep in range(args.reps):  # alternate: other users' load hits every configuration alike
        for name, (engine, kw) in configs.items():
            runs[name].append(burst(engine, prompts, args.max_tokens, **kw))
            print(f"rep {rep} {name}: {runs[name][-1]}", flush=True)
    out = {"config": {"model": "nano shape, 1024-token BPE vocabulary (random weights, fp32, MTP off)",
                      "clients": args.clients, "max_tokens": args.max_tokens, "threads": 1, "reps": args.reps,
                      "prompt_tokens": len(prompts[0])},
           "eager": {name: {"median": {k: statistics.median(r[k] for r in rs) for k in rs[0]}, "runs": rs}
                     for name, rs in runs.items()}}
    if not args.no_compile:
        from torch._dynamo.utils import counters

        out["compiled"] = {}
        for ctx in (256, 16384):
            compiled = Engine(model, compile=True)
            rs = []
            for rep in range(3):  # run 0 compiles; runs 1, 2: a new Scheduler (new KVCache) each
                before = counters["frames"]["total"]
                rs.append(burst(compiled, prompts, args.max_tokens, step_tokens=512, max_len=ctx))
                rs[-1]["dynamo_frames_compiled"] = counters["frames"]["total"] - before
                print(f"compiled, context {ctx}, run {rep}: {rs[-1]}", flush=True)
            out["compiled"][f"context {ctx}"] = rs
    if args.profile:
        out["decode_profile"] = prof
    out["versions"] = {"torch": torch.__version__}
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
