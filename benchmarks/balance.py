"""MoE balance with and without the aux-loss-free bias update (target: MaxVio <= 0.3 with it).

Two `nano` runs through the real loop, identical except balance.gamma (the recipe's value vs 0);
the sequence-level balance loss (alpha = 1e-4) is on in both. Reported: MaxVio_batch (mean over MoE
layers, averaged over the steps after warm-up) and MaxVio_global (loads summed over the held-out
set at the end), plus the final validation loss, so that a balance gain bought with quality shows.

    .venv/bin/python benchmarks/balance.py --steps 150 --warmup-frac 0.3
    .venv/bin/python benchmarks/balance.py --config configs/tiny.toml --seq 256 --gamma 1e-3 1e-4

Written to benchmarks/results/balance_<config>.json (--out to change), gamma beside every MaxVio;
`shipped_gamma` is the recipe's own balance.gamma.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from _results import write_result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/nano.toml")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--gamma", type=float, nargs="*", default=None,
                    help="bias step(s) to compare with gamma = 0 (default: the recipe's)")
    ap.add_argument("--warmup-frac", type=float, default=0.3, help="steps ignored before averaging MaxVio")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="result name or .json path (default balance_<config stem>)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from kexa.train.loop import train
    from kexa.train.prepare import prepare_data
    from kexa.train.recipe import load_recipe

    common = [f"train.steps={args.steps}", f"data.seq_len={args.seq}", f"data.batch_size={args.batch}",
              "train.save_every=0", "train.plot=false", "data.eval_batches=4"]
    base = load_recipe(args.config, common)
    gammas = [base.balance.gamma] if not args.gamma else args.gamma
    data = prepare_data(base)
    out = {}
    for label, g in [(f"with_bias_update_gamma_{g:g}", g) for g in gammas] + [("without", 0.0)]:
        with tempfile.TemporaryDirectory() as run:
            res = train(load_recipe(args.config, common + [f"balance.gamma={g}"]), run, data, quiet=True)
        after = res.history[int(args.warmup_frac * args.steps):]
        out[label] = {"gamma": g, "maxvio_batch": float(np.mean([m["maxvio"] for m in after])),
                      "maxvio_global": res.history[-1]["maxvio_global"], "val_loss": res.history[-1]["val_loss"],
                      "dead_experts_last": res.history[-1]["dead_experts"]}
        print(label, out[label], flush=True)
    out["target_maxvio_with"] = 0.3
    out = {"config": args.config, "shipped_gamma": base.balance.gamma, "alpha": base.balance.alpha,
           "steps": args.steps, "tokens_per_step": args.seq * args.batch, "warmup_frac_ignored": args.warmup_frac,
           "runs": out}
    print(json.dumps(out, indent=1))
    write_result(args.out or f"balance_{Path(args.config).stem}", out)


if __name__ == "__main__":
    main()
