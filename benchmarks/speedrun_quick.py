"""`kexa speedrun --quick` end to end: the whole command's wall time and each stage's own wall time.

Runs exactly what `bash speedrun.sh --quick --fresh` runs once .venv/ exists
(`python -m kexa.cli speedrun --quick --fresh --run-dir DIR`, a subprocess timed end to end), then
reads DIR/stages.json for the per-stage wall times and the SFT, RL and preference stages' summaries. Whether the data cache
(cache/, keyed by content) was warm is recorded: a cold cache adds the corpus + tokenizer build to the
`data` stage. The issue-20 budget is <= 3 minutes on an idle 2-core machine; on a shared machine the
load averages in the result say how far from idle it was.

    python benchmarks/speedrun_quick.py                  # ~2-3 min on 2 cores
Writes benchmarks/results/speedrun_quick.json (--out).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", default=None, help="default: a temporary folder")
    ap.add_argument("--out", default="speedrun_quick")
    args = ap.parse_args()
    run = Path(args.run_dir or tempfile.mkdtemp(prefix="speedrun_quick_")) / "run"
    cache_warm = (REPO / "cache").is_dir() and any((REPO / "cache").iterdir())  # configs/tiny.toml: cache_dir = "cache"
    cmd = [sys.executable, "-m", "kexa.cli", "speedrun", "--quick", "--fresh", "--run-dir", str(run)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"speedrun_quick: `{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    stages = json.loads((run / "stages.json").read_text())
    last_line = proc.stdout.strip().splitlines()[-1]
    result = {"run_dir": str(run), "data_cache_warm": cache_warm, "total_wall_s": wall,
              "budget_s": 180, "within_budget": wall <= 180,
              "stage_wall_s": {name: s["wall_s"] for name, s in stages.items()},
              "sft_summary": stages.get("sft", {}).get("summary"),
              "rl_summary": stages.get("rl", {}).get("summary"),
              "preference_summary": stages.get("preference", {}).get("summary"),
              "rl_plus_preference_wall_s": sum(stages.get(k, {}).get("wall_s", 0) for k in ("rl", "preference")),
              "eval_summary": stages.get("eval", {}).get("summary"), "last_line": last_line}
    path = write_result(args.out, result)
    print(f"speedrun --quick: {wall:.0f}s total (cache {'warm' if cache_warm else 'cold'}); stages: "
          + ", ".join(f"{k} {v:.0f}s" for k, v in result["stage_wall_s"].items()) + f"\n-> {path}")


if __name__ == "__main__":
    main()
