"""RL rollouts: `kexa rl` vs TRL's `GRPOTrainer` (beta = 0) — same HF model folder, same prompts, same verifiers.

Both sides start from one HF-layout model folder (--init-from: a kexa model exported by `save_pretrained`, which
transformers' ExaoneMoeForCausalLM reads; its MTP block, if any, is ignored by transformers and unused by RL)
and run --steps optimiser steps of the RL recipe (--config, default configs/rl_tiny.toml) with the same
rollout shape: P prompts x G samples per rollout batch generated in one call, temperature 1.0, top-p 0.95,
max_response_tokens, `steps_per_rollout` optimiser steps per batch, the same learning rate.
- prompts: RLBatches.sample_prompts with the recipe's seed — the exact prompts, in order, that `kexa rl` draws
  (kexa.tasks problems, half in reasoning mode), rendered with the K-EXAONE chat template; TRL gets them as
  text prompts (shuffle off), so both sides generate for the same prompts.
- rewards: the task verifiers (kexa.tasks, TRL's reward signature: f(prompts, completions, **columns)); in
  reasoning mode the reply is read after the `<think>` the prompt opened, as `kexa rl` does.
- TRL: GRPOConfig(beta=0, num_generations=G, per_device_train_batch_size=P·G/K, steps_per_generation=K,
  scale_rewards="group", its default loss), transformers' `generate()` rollouts (use_vllm=False) with
  `experts_implementation="grouped_mm"` (batched MoE) and sdpa attention; fp32 on CPU.
- kexa: `python -m kexa.cli rl` (a subprocess) with the in-process engine; fp32.
Each side runs in its own process with one thread (OMP_NUM_THREADS=1).

Measured: rollout tokens/s = generated response tokens (up to and including <|endofturn|>, padding excluded)
/ seconds inside the generation call, summed over the run's rollout batches (kexa: the engine call, from
metrics.jsonl's response_len x rollout_rows and rollout_s; TRL: model.generate wrapped with a clock).
Also the same rate without each side's first rollout (warm-up; compilation with `--kexa-set rl.compile=true`),
and each side's wall time per optimiser step. Target (issue 16): kexa's rollout tokens/s >= 3x TRL's.
The shared 2-core machine moves absolute numbers with other people's load; the sides alternate for --rounds.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rl_vs_trl.py --init-from runs/tiny-sft/model     # ~3 min
Writes benchmarks/results/rl_vs_trl.json (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def recipe(args):
    from kexa.train.rl_stage import load_rl_recipe
    return load_rl_recipe(args.config, [f"train.steps={args.steps}", "rl.eval_n=0", "train.plot=false"])


def run_kexa(args, work: Path) -> dict:
    run = work / f"kexa_{time.time_ns()}"
    cmd = [sys.executable, "-m", "kexa.cli", "rl", "--config", args.config, "--init-from", args.init_from,
           "--run-dir", str(run), "--quiet", "--steps", str(args.steps), "--set", "rl.eval_n=0", "--set", "train.plot=false"]
    for kv in args.kexa_set:
        cmd += ["--set", kv]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    batches = {}
    for m in rows:  # one entry per rollout batch (its metrics repeat over its K steps; rollout_s on the first)
        b = batches.setdefault(m["rollout"], {"tokens": m["response_len"] * m["rollout_rows"], "seconds": 0.0})
        b["seconds"] += m["rollout_s"]
    tokens, seconds = sum(b["tokens"] for b in batches.values()), sum(b["seconds"] for b in batches.values())
    later = [b for i, b in batches.items() if i > 1]  # steady state: without the first rollout (warm-up, compilation)
    steady = sum(b["tokens"] for b in later) / sum(b["seconds"] for b in later) if later else None
    return {"rollout_tokens": tokens, "rollout_s": seconds, "rollout_tok_per_s": tokens / seconds,
            "rollout_tok_per_s_after_first": steady, "overrides": args.kexa_set,
            "step_s_mean": statistics.mean(m["step_s"] for m in rows), "wall_s": wall,
            "reward_mean": statistics.mean(m["reward_mean"] for m in rows)}


def trl_side(args) -> dict:
    """Runs in its own process (--side trl): GRPOTrainer on the same prompts; prints one JSON line."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, ExaoneMoeForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from kexa.tokenizer import Tokenizer, render
    from kexa.tokenizer import specials as S
    from kexa.train.rl_stage import EngineRollouts, RLBatches, resolve_task
    torch.set_num_threads(1)
    rr = recipe(args)
    cfg, K = rr.rl, rr.rl.steps_per_rollout
    tasks = {s.name: resolve_task(s.task) for s in rr.sources}
    source = RLBatches(rr, Tokenizer.from_pretrained(args.init_from), tasks, EngineRollouts(None), seed=rr.recipe.train.seed)
    n_rollouts = -(-args.steps // K)
    drawn = [p for _ in range(n_rollouts) for p in source.sample_prompts()]  # what kexa rl draws, in order
    rows = [{"prompt": render(p.example.messages, tools=p.example.tools, enable_thinking=p.reasoning,
                              add_generation_prompt=True),
             "source": p.source, "reasoning": p.reasoning, "idx": i} for i, p in enumerate(drawn)]

    def task_reward(prompts, completions, idx, reasoning, **_):
        return [float(drawn[i].task.reward(drawn[i].example, (f"{S.THINK_OPEN}\n" if r else "") + c))
                for i, r, c in zip(idx, reasoning, completions)]

    tokenizer = AutoTokenizer.from_pretrained(args.init_from)
    model = ExaoneMoeForCausalLM.from_pretrained(args.init_from, dtype=torch.float32, attn_implementation="sdpa",
                                                 experts_implementation="grouped_mm")
    clock = {"tokens": 0, "seconds": 0.0, "calls": 0, "per_call": []}
    generate = model.generate

    def timed_generate(*a, **kw):
        t0 = time.perf_counter()
        out = generate(*a, **kw)
        dt = time.perf_counter() - t0
        n_prompt = (kw.get("input_ids") if "input_ids" in kw else a[0]).shape[1]
        n = sum(row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
                for row in out[:, n_prompt:].tolist())  # up to and including the end of turn; no padding
        clock["seconds"] += dt
        clock["calls"] += 1
        clock["tokens"] += n
        clock["per_call"].append((n, dt))
        return out

    model.generate = timed_generate
    P, G = cfg.prompts_per_rollout, cfg.group_size
    out_dir = tempfile.TemporaryDirectory(prefix="trl_rl_")  # nothing is saved there (save_strategy="no")
    targs = GRPOConfig(output_dir=out_dir.name, beta=0.0, num_generations=G,
                       per_device_train_batch_size=P * G // K, steps_per_generation=K,  # generation batch: P·G
                       max_completion_length=cfg.max_response_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                       learning_rate=rr.recipe.optim.lr, lr_scheduler_type="constant", weight_decay=0.0,
                       max_grad_norm=rr.recipe.optim.grad_clip or 1.0, max_steps=args.steps, num_iterations=1,
                       scale_rewards="group", shuffle_dataset=False, use_vllm=False, use_cpu=True, bf16=False,
                       report_to="none", save_strategy="no", logging_steps=1, seed=rr.recipe.train.seed,
                       dataloader_num_workers=0, disable_tqdm=True)
    trainer = GRPOTrainer(model=model, args=targs, reward_funcs=[task_reward], train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    later = clock["per_call"][1:]
    return {"rollout_tokens": clock["tokens"], "rollout_s": clock["seconds"], "generate_calls": clock["calls"],
            "rollout_tok_per_s": clock["tokens"] / clock["seconds"],
            "rollout_tok_per_s_after_first": sum(n for n, _ in later) / sum(t for _, t in later) if later else None, "step_s_mean": wall / args.steps, "wall_s": wall,
            "reward_mean": statistics.mean(rewards) if rewards else None, "loss_type": targs.loss_type,
            "experts_implementation": model.config._experts_implementation,
            "attn_implementation": model.config._attn_implementation}


def run_trl(args) -> dict:
    cmd = [sys.executable, __file__, "--side", "trl", "--init-from", args.init_from, "--config", args.config,
           "--steps", str(args.steps)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init-from", required=True, help="an HF-layout model folder with its tokenizer (an SFT model)")
    ap.add_argument("--config", default=str(ROOT / "configs/rl_tiny.toml"))
    ap.add_argument("--steps", type=int, default=4, help="optimiser steps per side and round")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--kexa-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a recipe override for the kexa side only, e.g. rl.compile=true (repeatable)")
    ap.add_argument("--side", choices=["trl"], help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/rl_vs_trl.json"))
    args = ap.parse_args()
    if args.side == "trl":
        print(json.dumps(trl_side(args)))
        return
    tmp = tempfile.TemporaryDirectory(prefix="rl_vs_trl_")  # kexa's run folders, removed at the end
    rounds = []
    for r in range(args.rounds):
        kexa, trl = run_kexa(args, Path(tmp.name)), run_trl(args)
        steady = (kexa["rollout_tok_per_s_after_first"] / trl["rollout_tok_per_s_after_first"]
                  if kexa["rollout_tok_per_s_after_first"] and trl["rollout_tok_per_s_after_first"] else None)
        rounds.append({"kexa": kexa, "trl": trl, "rollout_speedup": kexa["rollout_tok_per_s"] / trl["rollout_tok_per_s"],
                       "rollout_speedup_after_first": steady})
        print(json.dumps(rounds[-1], indent=1))
    rr = recipe(args)
    import torch
    import transformers
    import trl as trl_pkg
    report = {"model": args.init_from, "config": args.config, "steps": args.steps, "rounds": rounds,
              "rollout_speedup_median": statistics.median(x["rollout_speedup"] for x in rounds),
              "prompts_per_rollout": rr.rl.prompts_per_rollout, "group_size": rr.rl.group_size,
              "steps_per_rollout": rr.rl.steps_per_rollout, "max_response_tokens": rr.rl.max_response_tokens,
              "threads": 1, "torch": torch.__version__, "transformers": transformers.__version__,
              "trl": trl_pkg.__version__, "target": "kexa rollout tokens/s >= 3x TRL generate()"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"rollout speedup (median): {report['rollout_speedup_median']:.2f}x; wrote {args.out}")


if __name__ == "__main__":
    main()
