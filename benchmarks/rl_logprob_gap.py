"""The rollout-vs-trainer log-prob gap of kexa's own engine: what truncated IS (C) has to absorb at small scale.

Rollouts exactly as `kexa rl` makes them (RLBatches: the recipe's prompts, P x G samples in one engine call,
temperature 1.0 / top-p 0.95, μ's log-probs recorded), with the engine running the model in fp32 and in bf16
(a bf16 copy of the weights: what a bf16 serving engine such as vLLM holds). The trainer re-scores the same
tokens with a training forward (token_logprobs) in fp32 and under bf16 autocast (train.dtype = "bf16").
Per (rollout dtype, trainer dtype): mean and max |log π_train − log μ| over response tokens, the mean log-ratio,
and at C = 2 the mean truncated IS weight and the fraction of tokens whose ratio exceeds C.

    .venv/bin/python benchmarks/rl_logprob_gap.py --init-from runs/tiny-sft/model      # ~1 min on 2 cores
    .venv/bin/python benchmarks/rl_logprob_gap.py --preset nano                          # random nano weights
Writes benchmarks/results/rl_logprob_gap.json (--out).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import tempfile
import time
from pathlib import Path

import torch


def model_folder(args) -> Path:
    """--init-from, or a fresh random model of --preset with a small task tokenizer (tests' fixture recipe)."""
    if args.init_from:
        return Path(args.init_from)
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from sft_fixtures import make_tokenizer

    from kexa import KExaone, ModelConfig
    d = Path(tempfile.mkdtemp(prefix="rl_gap_"))
    tok = make_tokenizer(d, vocab_size=1024)
    torch.manual_seed(0)
    KExaone(ModelConfig.preset(args.preset).replace(vocab_size=tok.vocab_size)).save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    return d / "model"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init-from", help="a model folder with its tokenizer (default: random --preset weights)")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--config", default="configs/rl_tiny.toml", help="the RL recipe whose prompts and sampling are used")
    ap.add_argument("--rollouts", type=int, default=2, help="rollout batches per rollout dtype")
    ap.add_argument("--clip", type=float, default=2.0)
    ap.add_argument("--out", default="benchmarks/results/rl_logprob_gap.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from kexa import KExaone
    from kexa.data.loader import IGNORE
    from kexa.infer.sampling import SamplingParams
    from kexa.tokenizer import Tokenizer
    from kexa.train.rl import token_logprobs
    from kexa.train.rl_stage import EngineRollouts, RLBatches, load_rl_recipe, resolve_task
    folder = model_folder(args)
    rr = load_rl_recipe(args.config, ["data.grad_accum=1", "rl.steps_per_rollout=1"])
    tokenizer = Tokenizer.from_pretrained(folder)
    tasks = {s.name: resolve_task(s.task) for s in rr.sources}
    trainer = KExaone.from_pretrained(folder).train()  # fp32 master weights, as in the loop
    results = {}
    for rollout_dtype in ("fp32", "bf16"):
        engine_model = trainer if rollout_dtype == "fp32" else copy.deepcopy(trainer).to(torch.bfloat16)
        source = RLBatches(rr, tokenizer, tasks, EngineRollouts(engine_model), seed=rr.recipe.train.seed)
        rows, t0 = [], time.perf_counter()
        for _ in range(args.rollouts):
            prompts = [p for p in source.sample_prompts() for _ in range(rr.rl.group_size)]
            params = SamplingParams(max_new_tokens=rr.rl.max_response_tokens, temperature=rr.rl.temperature, top_p=rr.rl.top_p,
                                    stop_token_ids=(tokenizer.eos_id,), seed=len(rows))
            out = source.rollouts.generate([p.ids for p in prompts], params)
            rows.append(source.collate(list(range(len(prompts))), prompts, out, torch.zeros(len(prompts))))
        gen_s = time.perf_counter() - t0
        for trainer_dtype in ("fp32", "bf16"):
            diffs = []
            for x, y, inputs in rows:
                mask = y != IGNORE
                with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=trainer_dtype == "bf16"):
                    logp = token_logprobs(trainer(x, compute_mtp=False).logits, y.clamp_min(0))
                diffs.append((logp - inputs["rollout_logp"])[mask])
            d = torch.cat(diffs).double()  # log π_train − log μ per response token
            ratio = d.exp()
            results[f"rollout_{rollout_dtype}__trainer_{trainer_dtype}"] = {
                "tokens": d.numel(), "abs_gap_mean": float(d.abs().mean()), "abs_gap_max": float(d.abs().max()),
                "log_ratio_mean": float(d.mean()), "is_weight_mean": float(ratio.clamp(max=args.clip).mean()),
                "is_truncated_frac": float((ratio > args.clip).float().mean()),
                "ratio_outside_0.8_1.25_frac": float(((ratio < 0.8) | (ratio > 1.25)).float().mean())}
        results[f"rollout_{rollout_dtype}__generate_s"] = gen_s
        print(json.dumps({k: v for k, v in results.items() if k.startswith(f"rollout_{rollout_dtype}")}, indent=1))
    cfg = trainer.config
    report = {"model": str(folder) if args.init_from else f"random {args.preset}",
              "params": sum(p.numel() for p in trainer.parameters()), "hidden": cfg.hidden_size,
              "layers": cfg.num_hidden_layers, "recipe": args.config, "clip": args.clip, "rollouts": args.rollouts,
              "rows_per_rollout": rr.rl.prompts_per_rollout * rr.rl.group_size,
              "max_response_tokens": rr.rl.max_response_tokens, "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
