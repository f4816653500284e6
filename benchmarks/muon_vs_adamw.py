"""Muon vs AdamW on the `nano` preset: same data, same tokens, same schedule; steps Muon needs to
reach AdamW's final validation loss (target <= 0.8x).

Both runs use the nano recipe (its corpus, tokenizer, curriculum, WSD schedule) through the real
`kexa.train.loop.train`, differing only in `optim.name`; validation loss is measured every
--eval-every steps on the same held-out batches. The two runs are interleaved in one process (one
chunk of AdamW, one of Muon, ...) is not possible for a schedule that depends on total steps, so
they run back to back with one thread each; the comparison is in steps, not time, so machine load
does not bias it. Times are printed for information.

    .venv/bin/python benchmarks/muon_vs_adamw.py --steps 200 --seq 128 --batch 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch


def first_step_reaching(evals: list[tuple[int, float]], target: float) -> float | None:
    """Linear interpolation of the first step at which the eval curve reaches `target`."""
    prev = None
    for step, loss in evals:
        if loss <= target:
            if prev is None:
                return float(step)
            (s0, l0) = prev
            return s0 + (step - s0) * (l0 - target) / (l0 - loss)
        prev = (step, loss)
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/nano.toml")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--adamw-lr", type=float, default=None, help="AdamW lr (default: --lr)")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from kexa.train.loop import train
    from kexa.train.prepare import prepare_data
    from kexa.train.recipe import load_recipe

    common = [f"train.steps={args.steps}", f"data.seq_len={args.seq}", f"data.batch_size={args.batch}",
              f"train.eval_every={args.eval_every}", "train.save_every=0", "train.plot=false", "data.eval_batches=2"]
    data = prepare_data(load_recipe(args.config, common))
    curves = {}
    for name, lr in (("adamw", args.adamw_lr or args.lr), ("muon", args.lr)):
        recipe = load_recipe(args.config, common + [f"optim.name={name}", f"optim.lr={lr}"])
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as run:
            res = train(recipe, run, data, quiet=True)
        evals = [(m["step"], m["val_loss"]) for m in res.history if "val_loss" in m]
        curves[name] = {"evals": evals, "final_train": float(np.mean([m["loss"] for m in res.history[-10:]])),
                        "seconds": time.perf_counter() - t, "lr": lr}
        print(f"{name:6s} lr {lr:.1e}: final val {evals[-1][1]:.4f}  train(last10) {curves[name]['final_train']:.4f}  "
              f"{curves[name]['seconds']:.0f}s  evals {[round(v, 3) for _, v in evals]}", flush=True)
    target = curves["adamw"]["evals"][-1][1]
    reach = first_step_reaching(curves["muon"]["evals"], target)
    ratio = None if reach is None else reach / args.steps
    print(json.dumps({"tokens_per_step": args.seq * args.batch, "steps": args.steps,
                      "adamw_final_val": target, "muon_final_val": curves["muon"]["evals"][-1][1],
                      "muon_steps_to_adamw_final": reach, "ratio": ratio, "target_ratio": 0.8}, indent=1))


if __name__ == "__main__":
    main()
