"""Muon vs AdamW on the `nano` preset: same data, same tokens, same schedule; steps Muon needs to
reach AdamW's final validation loss (target <= 0.8x).

Both runs use the recipe (its corpus, tokenizer, curriculum, WSD schedule, MTP) through the real
`kexa.train.loop.train`, differing only in `optim.name` (and --adamw-lr if given); validation loss
is measured every --eval-every steps on the same held-out batches. Interleaving the two runs in
chunks is not possible for a schedule that depends on total steps, so they run back to back with
one thread each; the comparison is in steps, not time, so machine load does not bias it. Times
are printed for information.

--muon-run / --adamw-run DIR keep a run in DIR; when DIR already holds a finished run of the same
recipe (a `kexa pretrain` run included: its checkpoint's recipe.json is compared, ignoring only
cadence fields such as eval_every/save_every/threads), its curve is reused instead of retraining.
That is how the full-length nano comparison reused the `kexa pretrain` nano run (MTP on):

    kexa pretrain --config configs/nano.toml --run-dir runs/nano600 --set train.eval_every=25
    .venv/bin/python benchmarks/muon_vs_adamw.py --eval-every 25 --muon-run runs/nano600 \
        --adamw-run runs/nano600_adamw --json runs/muon_vs_adamw_nano600.json
    .venv/bin/python benchmarks/muon_vs_adamw.py --steps 40 --seq 64 --eval-every 5   # short check
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

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


def finished_history(run: Path, recipe) -> list[dict] | None:
    """The metrics of a finished run of `recipe` in `run`, or None if there is none; a finished run
    of another recipe is an error (it would be compared as if it were this one)."""
    from kexa.train import checkpoint as ckpt
    from kexa.train.recipe import resume_mismatches

    last = ckpt.latest_checkpoint(run) if (run / "model").is_dir() else None
    if last is None:
        return None
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    problems = resume_mismatches(ckpt.load_recipe_dict(last), recipe.to_dict())
    if len(history) != recipe.train.steps:
        problems.append(f"{len(history)} logged steps, want {recipe.train.steps}")
    if problems:
        raise SystemExit(f"{run} holds a finished run of another recipe:\n  " + "\n  ".join(problems))
    return history


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/nano.toml")
    ap.add_argument("--steps", type=int, help="optimiser steps (default: the recipe's)")
    ap.add_argument("--seq", type=int, help="sequence length (default: the recipe's)")
    ap.add_argument("--batch", type=int, help="sequences per step (default: the recipe's)")
    ap.add_argument("--lr", type=float, help="Muon (and AdamW) lr (default: the recipe's)")
    ap.add_argument("--adamw-lr", type=float, default=None, help="AdamW lr (default: --lr)")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--muon-run", type=Path, help="keep (or reuse) the Muon run in this folder")
    ap.add_argument("--adamw-run", type=Path, help="keep (or reuse) the AdamW run in this folder")
    ap.add_argument("--json", type=Path, help="also write the result (with both curves) to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from kexa.train.loop import train
    from kexa.train.prepare import prepare_data
    from kexa.train.recipe import load_recipe

    given = {"train.steps": args.steps, "data.seq_len": args.seq, "data.batch_size": args.batch, "optim.lr": args.lr}
    common = [f"{k}={v}" for k, v in given.items() if v is not None]
    common += [f"train.eval_every={args.eval_every}", "train.save_every=0", "train.plot=false"]
    base = load_recipe(args.config, common)
    data = prepare_data(base)
    curves = {}
    for name, lr, run in (("adamw", args.adamw_lr or base.optim.lr, args.adamw_run),
                          ("muon", base.optim.lr, args.muon_run)):
        recipe = load_recipe(args.config, common + [f"optim.name={name}", f"optim.lr={lr}"])
        t = time.perf_counter()
        history = finished_history(run, recipe) if run is not None else None
        reused = history is not None
        if history is None:
            with tempfile.TemporaryDirectory() as tmp:
                history = train(recipe, run or tmp, data, quiet=True).history
        evals = [(m["step"], m["val_loss"]) for m in history if "val_loss" in m]
        curves[name] = {"lr": lr, "evals": evals, "final_train": float(np.mean([m["loss"] for m in history[-10:]])),
                        "seconds": None if reused else time.perf_counter() - t,
                        "step_s_median": float(np.median([m["step_s"] for m in history])),
                        "run": str(run) if run is not None else None, "reused": reused}
        took = f"reused {run}" if reused else f"{curves[name]['seconds']:.0f}s"
        print(f"{name:6s} lr {lr:.1e}: final val {evals[-1][1]:.4f}  train(last10) {curves[name]['final_train']:.4f}  "
              f"{took}  evals {[round(v, 3) for _, v in evals]}", flush=True)
    steps, target = base.train.steps, curves["adamw"]["evals"][-1][1]
    reach = first_step_reaching(curves["muon"]["evals"], target)
    result = {"config": args.config, "tokens_per_step": base.data.seq_len * base.data.batch_size * base.data.grad_accum,
              "steps": steps, "eval_every": args.eval_every, "mtp_weight": base.balance.mtp_weight,
              "adamw_final_val": target, "muon_final_val": curves["muon"]["evals"][-1][1],
              "muon_steps_to_adamw_final": reach, "ratio": None if reach is None else reach / steps,
              "target_ratio": 0.8}
    print(json.dumps(result, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(result | {"curves": curves}, indent=1) + "\n")


if __name__ == "__main__":
    main()
