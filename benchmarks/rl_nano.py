"""RL's effect on a nano SFT model (issue 16 targets): gain on the trained families, drift on the others.

Two measurements, one run:
1. the trained families: `kexa rl`'s own held-out evaluation of the input (SFT) model before training and of
   the RL model after it (RUN/rl_eval.json: greedy, `rl.eval_n` problems per family x language x mode, never
   trained on), pooled over both modes -> after - before with a 95% Newcombe interval, overall
   (`kexa.eval.targets.rl_gain`, the speedrun's target row) and per family. Target: >= +5 points, interval
   excluding 0.
2. every other family of `kexa.tasks` (tier 1, six languages, both modes, greedy): the SFT model and the RL
   model evaluated here, side by side -> the change per family. Target: no family outside the mixture drops
   by more than 2 points (with n problems per cell the interval is reported beside it: a 2-point bound needs
   far more problems than a CPU evaluation affords, so the point estimate is what is compared).
Writes benchmarks/results/rl_nano.json.

    PYTHONPATH=src .venv/bin/python benchmarks/rl_nano.py --rl-run runs/nano-rl --sft-model runs/nano-sft/model --n 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_result  # noqa: E402


def family_counts(report: dict) -> dict[str, tuple[int, int]]:
    """task -> (correct, n) pooled over the report's modes."""
    from kexa.eval.targets import accuracy_rows
    out: dict[str, tuple[int, int]] = {}
    for mode in report["accuracy"]:
        for task, row in accuracy_rows(report, mode).items():
            k, n = out.get(task, (0, 0))
            out[task] = (k + row["correct"], n + row["n"])
    return out


def change(before: tuple[int, int], after: tuple[int, int]) -> dict:
    from kexa.eval.targets import newcombe_interval
    (k1, n1), (k2, n2) = before, after
    return {"before": k1 / n1, "after": k2 / n2, "change": k2 / n2 - k1 / n1,
            "interval": list(newcombe_interval(k1, n1, k2, n2)), "n": n2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rl-run", required=True, help="a `kexa rl` run folder (rl_eval.json, rl_recipe.json, model/)")
    ap.add_argument("--sft-model", required=True, help="the model RL started from (its --init-from)")
    ap.add_argument("--n", type=int, default=3, help="held-out problems per family x language x mode (part 2)")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="rl_nano")
    args = ap.parse_args()

    import torch

    import kexa.tasks
    from kexa.eval.targets import rl_gain
    from kexa.eval.tasks_eval import evaluate_tasks
    from kexa.model.transformer import KExaone
    from kexa.tokenizer import Tokenizer

    torch.set_num_threads(args.threads)
    run = Path(args.rl_run)
    rl_eval = json.loads((run / "rl_eval.json").read_text())
    recipe = json.loads((run / "rl_recipe.json").read_text())
    before, after = family_counts(rl_eval["before"]), family_counts(rl_eval["after"])
    trained = {task: change(before[task], after[task]) for task in after}
    overall = rl_gain(rl_eval)
    overall["met"] = overall["gain"] >= 0.05 and overall["interval"][0] > 0

    tok = Tokenizer.from_pretrained(args.sft_model)
    langs = list(kexa.tasks.LANGS)
    others = {name: kexa.tasks.get(name) for name in kexa.tasks.names() if name not in trained}
    reports = {}
    for label, folder in (("sft", args.sft_model), ("rl", run / "model")):
        model = KExaone.from_pretrained(folder)
        reports[label] = evaluate_tasks(model, tok, others, langs, n=args.n, tier=1, max_new_tokens=args.max_new_tokens)
    sft_counts, rl_counts = family_counts(reports["sft"]), family_counts(reports["rl"])
    outside = {task: change(sft_counts[task], rl_counts[task]) for task in others}
    worst = min((row["change"] for row in outside.values()), default=0.0)

    print(f"trained families ({', '.join(trained)}), both modes, n {overall['n']}: {overall['before']:.3f} -> "
          f"{overall['after']:.3f}, gain {overall['gain']:+.3f} [{overall['interval'][0]:+.3f}, "
          f"{overall['interval'][1]:+.3f}] (target >= +0.05, interval > 0: {'met' if overall['met'] else 'missed'})")
    for task, row in {**trained, **outside}.items():
        print(f"  {task:9s} {row['before']:.3f} -> {row['after']:.3f} ({row['change']:+.3f}, n {row['n']})"
              + ("  [trained]" if task in trained else ""))
    print(f"largest drop outside the mixture: {worst:+.3f} (target >= -0.02)")
    write_result(args.out, {
        "rl_run": str(run), "sft_model": str(args.sft_model), "rl_steps": recipe.get("recipe", {}).get("train", {}).get("steps"),
        "trained": {"overall": overall, "families": trained, "decoding": "greedy",
                    "n_per_cell": rl_eval["after"]["n_per_cell"]},
        "outside": {"families": outside, "worst_change": worst, "met": worst >= -0.02, "n_per_cell": args.n,
                    "decoding": "greedy"},
    })


if __name__ == "__main__":
    main()
