"""`kexa sft` on a tiny pre-trained model: wall time of the whole command, packing fill, and held-out
task accuracy / template compliance in both modes before and after SFT.

Runs exactly the CLI a user runs (`python -m kexa.cli sft --config configs/sft_tiny.toml ...`, a
subprocess, timed end to end: data, evaluation before, training, evaluation after, export, plot),
then reads RUN/metrics.jsonl and RUN/sft_eval.json. Packing: the recipe's data stream is drawn for
`--fill-batches` micro-batches and compared with one-conversation-per-row padding (what a loader
without packing trains on). A tiny model learns the format, not the tasks: its accuracy is ~0.

    kexa pretrain --config configs/tiny.toml --run-dir runs/tiny
    .venv/bin/python benchmarks/sft_tiny.py --init-from runs/tiny/model      # ~2 min on 2 cores
Writes benchmarks/results/sft_tiny.json (--out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def packing_fill(config: str, init_from: str, overrides: list[str], batches: int) -> dict:
    from kexa.tokenizer import Tokenizer
    from kexa.train.sft import build_data, load_sft_recipe
    sr = load_sft_recipe(config, overrides)
    data = build_data(sr, Tokenizer.from_pretrained(init_from))
    real, slots, convs, targets = 0, 0, [], 0
    for _ in range(batches):
        rows = data.batches.next_rows(sr.recipe.data.batch_size)
        real += sum(len(it.ids) for row in rows for it in row)
        slots += len(rows) * (sr.recipe.data.seq_len + 1)
        convs += [len(it.ids) for row in rows for it in row]
        targets += sum(sum(it.mask[1:]) for row in rows for it in row)
    return {"rows_fill": real / slots, "one_per_row_fill": statistics.mean(convs) / (sr.recipe.data.seq_len + 1),
            "conversations_per_row": len(convs) / (batches * sr.recipe.data.batch_size),
            "mean_conversation_tokens": statistics.mean(convs), "max_conversation_tokens": max(convs),
            "target_share_of_real_tokens": targets / real}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--init-from", default="runs/tiny/model")
    ap.add_argument("--config", default="configs/sft_tiny.toml")
    ap.add_argument("--run-dir", default=None, help="default: a temporary folder")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--fill-batches", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/sft_tiny.json")
    args = ap.parse_args()

    run = Path(args.run_dir or tempfile.mkdtemp(prefix="sft_tiny_")) / "run"
    cmd = [sys.executable, "-m", "kexa.cli", "sft", "--config", args.config, "--init-from", args.init_from,
           "--run-dir", str(run), "--quiet"] + [x for s in args.overrides for x in ("--set", s)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"kexa sft failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    report = json.loads((run / "sft_eval.json").read_text())
    last = rows[-1]
    result = {
        "command": " ".join(cmd[1:]), "wall_s": wall, "steps": last["step"],
        "median_tok_per_s": statistics.median(r["tok_per_s"] for r in rows[2:] or rows),
        "first_loss": rows[0]["loss"], "final_loss": last["loss"], "final_val_loss": last.get("val_loss"),
        "packing": packing_fill(args.config, args.init_from, args.overrides, args.fill_batches),
        "before": {k: report["before"][k] for k in ("compliance", "checks", "accuracy_by_task")} if "before" in report else None,
        "after": {k: report["after"][k] for k in ("compliance", "checks", "accuracy_by_task")},
        "samples_after": report["after"]["samples"],
        "skipped_conversations": report["skipped_conversations"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", "utf-8")
    print(f"kexa sft tiny: {wall:.1f}s wall for {result['steps']} steps; rows {result['packing']['rows_fill']:.1%} full "
          f"(one per row: {result['packing']['one_per_row_fill']:.1%}); compliance after: {result['after']['compliance']} "
          f"(before: {result['before'] and result['before']['compliance']})")


if __name__ == "__main__":
    main()
