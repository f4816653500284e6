"""Context extension end to end: pre-train short, extend in two stages (8x, 32x), NIAH before/after.

    python benchmarks/context_extension.py       # nano: 128 -> 1024 -> 4096 tokens (~1 h on one thread here)
    python benchmarks/context_extension.py --pretrain-config configs/tiny.toml \
        --extend-config configs/extend_tiny.toml --pretrain-steps 300 --out runs/bench-ctx-tiny   # tiny: 64 -> 512 -> 2048

Steps (each a `kexa` command in a subprocess, timed):
  1. `kexa pretrain --config PRETRAIN --run-dir OUT/pretrain --set train.steps=N` (short context;
     configs/nano_short.toml has synthetic retrieval in its mixture); skipped when OUT/pretrain/model
     exists, its training time then read from OUT/pretrain/metrics.jsonl
     (`--pretrained RUN_DIR` instead: extend a finished run, e.g. one pre-trained in resumed pieces)
  2. `kexa extend --config EXTEND --run-dir OUT/extend --init-from OUT/pretrain/model`
     (its extend_log.jsonl holds the baseline NIAH over every stage length and the short-context
     loss, then per round: NIAH over the stage's lengths, short-context loss, gate decision)
Prints a table - NIAH accuracy per length before extension and after each stage, short-context loss
before/after with the relative regression, wall time per step - and writes it as JSON and markdown
to benchmarks/results/context_extension.{json,md}; the heat maps are in OUT/extend/niah/*.png.
There is no outside peer for this claim: the comparison is the same model before and after.
The CPU is shared (2 cores, several engineers): wall times are what this run saw.

    python benchmarks/context_extension.py --intervals benchmarks/results/context_extension.json

adds, without running anything, the 95% Wilson interval of every NIAH figure of a results file
(cases per length = depths x samples of the extension config's [niah]) and what the file does and
does not measure -> benchmarks/results/context_extension_intervals.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    print("$", " ".join(cmd), flush=True)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                              env=os.environ | {"OMP_NUM_THREADS": "1"})
    took = time.perf_counter() - t0
    if proc.returncode not in (0, 3):  # 3: kexa extend finished with a gate unmet (reported below)
        sys.exit(f"{cmd[3]} failed ({proc.returncode}); see {log}:\n" + log.read_text()[-3000:])
    return took


def digits(niah_json: Path) -> dict[str, float]:
    """Digit accuracy per length, recomputed from the saved answers (partial credit)."""
    from kexa.data.synthetic import answer_of
    from kexa.eval.niah import digit_accuracy
    cells = json.loads(niah_json.read_text())["cells"]
    out: dict[str, list[float]] = {}
    for c in cells:
        out.setdefault(str(c["length"]), []).extend(digit_accuracy(answer_of(k["answer"]), k["value"]) for k in c["cases"])
    return {n: sum(v) / len(v) for n, v in out.items()}


def table(log: list[dict], niah_dir: Path) -> tuple[list[str], dict]:
    base = next(r for r in log if r["event"] == "baseline")
    lengths = list(base.get("niah", {}))
    rows = [("before extension", base.get("niah", {}), digits(niah_dir / "baseline.json") if base.get("niah") else {},
             base["short_loss"], 0.0, "")]
    for r in log:
        if r["event"] == "round":
            rows.append((f"after {r['stage']} (seq {r['seq_len']}) round {r['round']}", r["niah"],
                         digits(next(niah_dir.glob(f"stage*-{r['stage']}-round{r['round']}.json"))),
                         r["short_loss"], r["regression"], r["decision"]))
    lengths = lengths or sorted({n for row in rows for n in row[1]}, key=int)
    head = "| model | " + " | ".join(f"NIAH@{n} (digits)" for n in lengths) + " | short loss | regression | decision |"
    lines = [head, "|" + "---|" * (len(lengths) + 4)]
    for name, niah, dig, loss, reg, dec in rows:
        cells = " | ".join(f"{niah[n]:.2f} ({dig[n]:.2f})" if n in niah else "-" for n in lengths)
        lines.append(f"| {name} | {cells} | {loss:.4f} | {reg:+.2%} | {dec} |")
    keys = ("model", "niah", "digit_accuracy", "short_loss", "regression", "decision")
    return lines, {"rows": [dict(zip(keys, r)) for r in rows]}


def pretrained_model(path: Path) -> tuple[Path, Path, float]:
    """(model folder, its run folder, last step it saw) for --pretrained: a run folder (RUN/model, all
    steps) or a checkpoint's model folder (RUN/checkpoints/step_N/model, steps up to N)."""
    path = path.resolve()
    if (path / "model" / "config.json").exists():
        return path / "model", path, float("inf")
    m = re.fullmatch(r"step_(\d+)", path.parent.name)
    if (path / "config.json").exists() and m and (path.parents[2] / "metrics.jsonl").exists():
        return path, path.parents[2], int(m.group(1))
    sys.exit(f"--pretrained {path}: neither a finished run (RUN/model) nor a checkpoint's model folder "
             "(RUN/checkpoints/step_N/model)")


def intervals(path: str) -> None:
    """Wilson intervals and the measurement's limits for an existing results file (no training)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _results import write_result
    from kexa.eval.niah import wilson_interval
    from kexa.train.extend import load_config

    res = json.loads(Path(path).read_text())
    niah = load_config(ROOT / res["extend_config"], res.get("overrides", [])).niah
    n = len(niah.depths) * niah.samples
    rows = []
    for r in res["rows"]:
        cells = {length: {"accuracy": acc, "correct": round(acc * n), "cases": n,
                          "wilson_95": [round(x, 3) for x in wilson_interval(round(acc * n), n)]}
                 for length, acc in r["niah"].items()}
        rows.append({"model": r["model"], "decision": r.get("decision", ""), "niah": cells})
        print(f"{r['model']:<32} " + "  ".join(f"@{k} {c['accuracy']:.2f} [{c['wilson_95'][0]:.2f}, "
                                                f"{c['wilson_95'][1]:.2f}]" for k, c in cells.items()))
    final = rows[-1]["niah"]
    write_result("context_extension_intervals", {
        "source": path, "cases_per_length": n, "depths": niah.depths, "samples_per_depth": niah.samples, "rows": rows,
        "final_model_lengths_evaluated": sorted(map(int, final)),
        "limits": ["the 8x stage ended advance_unmet (NIAH@256 below the 0.9 gate) with max_rounds = 1",
                   f"the final model was evaluated only at {sorted(map(int, final))} (the 32x stage's lengths)",
                   f"{n} cases per length: one case moves a figure by {1 / n:.2f}",
                   "the needle uses the synthetic training data's sentence templates (kexa.data.synthetic."
                   "TEMPLATES); keys and values are held out, the phrasing is not",
                   "pending: every length, >= 50 cases per cell and the out-of-template needle "
                   "(kexa eval niah --samples 50 --needle novel) on the final model, whose checkpoint "
                   "is not on this machine"]})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pretrain-config", default="configs/nano_short.toml")
    p.add_argument("--extend-config", default="configs/extend_nano.toml")
    p.add_argument("--pretrain-steps", type=int, default=240)
    p.add_argument("--out", default="runs/bench-context-extension")
    p.add_argument("--pretrained", default=None, metavar="PATH",
                   help="extend an existing `kexa pretrain` model instead of pre-training in OUT/pretrain: a run folder "
                        "(its model/) or a checkpoint's model/ folder (e.g. runs/nano-induction, pre-trained in resumed pieces)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra `kexa extend --set` items")
    p.add_argument("--fresh", action="store_true", help="pre-train again even if OUT/pretrain/model exists")
    p.add_argument("--report-only", action="store_true", help="only rebuild the table from OUT/extend")
    p.add_argument("--intervals", default=None, metavar="RESULTS_JSON",
                   help="only add Wilson intervals and the limits to an existing results file")
    args = p.parse_args()
    if args.intervals:
        return intervals(args.intervals)
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    py = [sys.executable, "-m", "kexa.cli"]
    timings = {}
    if args.pretrained:
        model_dir, run_dir, upto = pretrained_model(Path(args.pretrained))
        steps = [m for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                 if "step_s" in m and m["step"] <= upto]
        timings["pretrain_train_s"] = sum(m["step_s"] for m in steps)  # the pieces' step times
        args.pretrain_steps = max(m["step"] for m in steps)
    else:
        run_dir, model_dir = out / "pretrain", out / "pretrain" / "model"
        if args.fresh and run_dir.exists():
            shutil.rmtree(run_dir)
        if not (model_dir / "config.json").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
            timings["pretrain_s"] = run(py + ["pretrain", "--config", args.pretrain_config, "--run-dir", str(run_dir),
                                              "--quiet", "--set", f"train.steps={args.pretrain_steps}",
                                              "--set", "train.plot=false", "--set", "train.eval_every=0"],
                                      out / "pretrain.log")
        else:  # reused: the sum of its step times (the command's own wall time was not measured here)
            steps = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
            timings["pretrain_train_s"] = sum(m["step_s"] for m in steps)
    sets = [x for s in args.overrides for x in ("--set", s)]
    if not args.report_only:
        shutil.rmtree(out / "extend", ignore_errors=True)
        timings["extend_s"] = run(py + ["extend", "--config", args.extend_config, "--run-dir", str(out / "extend"),
                                        "--init-from", str(model_dir), "--quiet", *sets],
                                  out / "extend.log")
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    if args.report_only and (results / "context_extension.json").exists():  # keep the measured wall times
        old = json.loads((results / "context_extension.json").read_text())
        timings = {k: old[k] for k in ("pretrain_s", "pretrain_train_s", "extend_s") if k in old} | timings
    log = [json.loads(x) for x in (out / "extend" / "extend_log.jsonl").read_text().splitlines()]
    lines, data = table(log, out / "extend" / "niah")
    rounds = [r for r in log if r["event"] == "round"]
    lines += ["", "wall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())
              + "; per round: " + ", ".join(f"{r['stage']}#{r['round']} {r['seconds']:.0f}s "
                                            f"({r['tok_per_s']:.0f} train tok/s)" for r in rounds)]
    print("\n".join(lines))
    summary = {"pretrain_config": args.pretrain_config, "pretrained": args.pretrained, "extend_config": args.extend_config,
               "pretrain_steps": args.pretrain_steps, "overrides": args.overrides, **timings, **data, "log": log}
    (results / "context_extension.json").write_text(json.dumps(summary, indent=1))
    (results / "context_extension.md").write_text("\n".join(lines) + "\n")

if __name__ == "__main__":
    main()
