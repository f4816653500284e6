"""Does concentrating the task data on the two target skills buy them at the speedrun's budget?

The committed nano speedrun (docs/speedrun/nano/) pre-trained on `configs/nano_speedrun.toml`: 800 steps of
8 x 256 tokens, task dialogues of 8 families (~0.6M tokens), and ended with 2-digit addition 0.01 and
8-pair lookup 0.00. This study pre-trains the same model, optimiser, schedule and step count with the task
source cut to the two skills the targets name (arith, lookup at tier 1) and given more of the mixture, then
asks both base models the same held-out problems in the chat template's reasoning mode at the report's
settings (temperature 1.0, top-p 0.95) — the base models, before any SFT: what pre-training alone gives.

    .venv/bin/python experiments/skill_focus.py --baseline runs/speedrun/pretrain/model --run runs/skill-focus
    # -> experiments/results/skill_focus.json (resumable: the training run resumes from its checkpoints)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOCUS = [
    'data.tasks=["arith", "lookup"]', "data.task_tiers=[1]",
    # the same three stages, the task share raised (foundation ~1/2, domain ~1/2, reasoning ~2/3)
    'curriculum=[{name = "foundation", fraction = 0.6, weights = {en = 1.0, ko = 1.0, es = 0.5, de = 0.5, ja = 0.5, '
    'vi = 0.5, code = 0.25, stem = 0.25, synthetic = 2.5, tasks = 7.0}}, '
    '{name = "domain", fraction = 0.25, weights = {en = 0.5, ko = 0.5, es = 0.25, de = 0.25, ja = 0.25, vi = 0.25, '
    'code = 1.0, stem = 1.0, synthetic = 2.5, tasks = 7.0}}, '
    '{name = "reasoning", fraction = 0.15, weights = {stem = 1.0, code = 0.5, en = 0.5, ko = 0.5, synthetic = 2.0, '
    'tasks = 9.0}}]',
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="the speedrun's pre-trained model (RUN/pretrain/model)")
    ap.add_argument("--run", default="runs/skill-focus")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--n", type=int, default=10, help="held-out problems per task x language")
    ap.add_argument("--out", default=str(REPO / "experiments/results/skill_focus.json"))
    args = ap.parse_args()

    import kexa.tasks
    from kexa.eval.targets import accuracy_rows
    from kexa.eval.tasks_eval import evaluate_tasks
    from kexa.model.transformer import KExaone
    from kexa.tokenizer import Tokenizer
    from kexa.train import checkpoint as ckpt
    from kexa.train.loop import train
    from kexa.train.prepare import prepare_data
    from kexa.train.recipe import load_recipe

    recipe = load_recipe(REPO / "configs/nano_speedrun.toml", FOCUS + [f"train.steps={args.steps}"])
    run = Path(args.run)
    t0 = time.perf_counter()
    if not (run / "model" / "config.json").exists():
        train(recipe, run, prepare_data(recipe), resume=run.exists() and ckpt.latest_checkpoint(run) is not None)
    train_s = time.perf_counter() - t0
    tasks = {"arith": kexa.tasks.get("arith"), "lookup": kexa.tasks.get("lookup")}
    langs = list(kexa.tasks.LANGS)
    out = {"steps": args.steps, "focus_overrides": FOCUS, "train_s": train_s, "n_per_task": args.n * len(langs),
           "settings": {"mode": "reasoning", "temperature": 1.0, "top_p": 0.95, "max_new_tokens": 192}, "models": {}}
    for name, folder in (("speedrun (8 families)", Path(args.baseline)), ("focused (arith, lookup)", run / "model")):
        model, tok = KExaone.from_pretrained(folder), Tokenizer.from_pretrained(folder)
        rep = evaluate_tasks(model, tok, tasks, langs, n=args.n, tier=1, modes=("reasoning",), seed=1,
                             temperature=1.0, top_p=0.95, max_new_tokens=192, samples=2)
        row = {task: {k: r[k] for k in ("accuracy", "interval", "by_lang")}
               for task, r in accuracy_rows(rep, "reasoning").items()}
        out["models"][name] = {"folder": str(folder), "accuracy": row, "compliance": rep["compliance"]["reasoning"],
                               "samples": rep["samples"]}
        print(name, {t: round(r["accuracy"], 3) for t, r in row.items()}, "compliance", rep["compliance"]["reasoning"],
              flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
