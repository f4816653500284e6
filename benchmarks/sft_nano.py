"""Held-out accuracy per task family and template compliance of a nano SFT model, both modes (issue 14 target).

`kexa sft`'s own evaluator (`kexa.eval.tasks_eval.evaluate_tasks`: held-out problems never trained on, the
chat template's generation prompt with thinking on or off, greedy decoding through kexa's engine) over every
family of `kexa.tasks` at tier 1 in all six languages, with more problems than the speedrun's in-stage
evaluation. Targets: compliance >= 95% in each mode; accuracy per family reported in both modes, and
whether the reasoning mode wins on the multi-step families (word problems, math, lookup, sorting).
Writes benchmarks/results/sft_nano.json (with 95% Wilson intervals).

    PYTHONPATH=src .venv/bin/python benchmarks/sft_nano.py --model runs/speedrun/sft/model --n 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_result  # noqa: E402

MULTI_STEP = ("word", "math", "lookup", "sorting")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="SFT model folder (e.g. the speedrun's RUN/sft/model)")
    ap.add_argument("--n", type=int, default=3, help="held-out problems per family x language x mode")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="sft_nano")
    args = ap.parse_args()

    import torch

    import kexa.tasks
    from kexa.eval.niah import wilson_interval
    from kexa.eval.targets import accuracy_rows
    from kexa.eval.tasks_eval import evaluate_tasks
    from kexa.model.transformer import KExaone
    from kexa.tokenizer import Tokenizer

    torch.set_num_threads(args.threads)
    model, tok = KExaone.from_pretrained(args.model), Tokenizer.from_pretrained(args.model)
    langs = list(kexa.tasks.LANGS)
    tasks = {name: kexa.tasks.get(name) for name in kexa.tasks.names()}
    rep = evaluate_tasks(model, tok, tasks, langs, n=args.n, tier=1, max_new_tokens=args.max_new_tokens, samples=6)
    per_cell = args.n * len(langs)
    rows = {mode: accuracy_rows(rep, mode) for mode in ("reasoning", "non_reasoning")}
    families = {}
    for name in tasks:
        row = {mode: {k: rows[mode][name][k] for k in ("accuracy", "interval", "by_lang")} for mode in rows}
        row["reasoning_minus_plain"] = row["reasoning"]["accuracy"] - row["non_reasoning"]["accuracy"]
        families[name] = row
    total = per_cell * len(tasks)
    compliance = {mode: {"value": rep["compliance"][mode], "n": total,
                         "interval": list(wilson_interval(round(rep["compliance"][mode] * total), total)),
                         "checks": rep["checks"][mode], "met": rep["compliance"][mode] >= 0.95}
                  for mode in ("reasoning", "non_reasoning")}
    multi = [families[f]["reasoning_minus_plain"] for f in MULTI_STEP if f in families]
    out = {"model": str(args.model), "n_per_cell": args.n, "langs": langs, "tier": 1, "decoding": "greedy",
           "max_new_tokens": args.max_new_tokens, "compliance": compliance, "families": families,
           "accuracy_mean": rep["accuracy_mean"],
           "reasoning_wins_on_multi_step": sum(d > 0 for d in multi), "multi_step_families": list(MULTI_STEP),
           "samples": rep["samples"]}
    for name, row in families.items():
        print(f"{name:9s} reasoning {row['reasoning']['accuracy']:.2f}  plain {row['non_reasoning']['accuracy']:.2f}")
    print(f"compliance: reasoning {compliance['reasoning']['value']:.3f}, non-reasoning "
          f"{compliance['non_reasoning']['value']:.3f} (target 0.95 each)")
    write_result(args.out, out)


if __name__ == "__main__":
    main()
