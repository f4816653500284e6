"""Per-GPU memory of the shipped 236B recipe (configs/k-exaone-236b.toml) from `kexa plan`, over GPU
counts and micro-batch lengths, on 80 GiB GPUs. Meta device only: runs in seconds on a laptop.

    PYTHONPATH=src python benchmarks/plan_236b.py --out benchmarks/results/plan_236b.json

Each row is `kexa.train.plan.plan(recipe with data.seq_len = T, gpus, 80)`: exact sharded static
state (weights, gradients, optimizer), the transient FSDP/Muon gathers, the activation estimate
(calibrated on CPU within 15%, tests/test_plan.py) and a 10% reserve.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from kexa.train.plan import GiB, plan
from kexa.train.recipe import load_recipe

CONFIG = "configs/k-exaone-236b.toml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu-mem", type=float, default=80.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for seq_len in (2048, 4096, 8192):
        recipe = load_recipe(CONFIG, [f"data.seq_len={seq_len}"])
        for gpus in (64, 128, 256, 512, 2048):
            p = plan(recipe, gpus, args.gpu_mem)
            rows.append({"seq_len": seq_len, **asdict(p)})
            print(f"seq {seq_len:5d}  gpus {gpus:5d}  static {3 * p.weights / GiB:6.2f}  "
                  f"gathers {p.gathers / GiB:6.2f}  "
                  f"activations {p.activations / GiB:6.2f}  total {p.total / GiB:7.2f} GiB  "
                  f"{'fits' if p.fits else 'does NOT fit'}")
    if args.out:
        Path(args.out).write_text(json.dumps({"config": CONFIG, "gpu_mem_gib": args.gpu_mem, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
