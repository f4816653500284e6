"""Result files of the benchmarks: `benchmarks/results/<name>.json`, each with the command that wrote
it, when, and how busy the machine was (the 2-core CPU is shared: load averages are recorded at the
start and the end of the run, and a run under load says so, so readers compare ratios, not
absolute speeds). Every figure the README and docs/ quote comes from one of these files.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
_START = {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg": os.getloadavg()}


def machine() -> dict:
    import torch
    end = os.getloadavg()
    cores = os.cpu_count() or 1
    busy = max(_START["loadavg"][0], end[0]) > 0.75 * cores
    return {"cores": cores, "torch": torch.__version__, "loadavg_1_5_15_start": list(_START["loadavg"]),
            "loadavg_1_5_15_end": list(end),
            "note": ("shared machine: other users' jobs ran during this measurement (load averages above); "
                     "alternating runs and medians make the ratios usable, absolute speeds are not")
            if busy else "machine quiet during the run (load averages above)"}


def write_result(name: str, payload: dict) -> Path:
    """Write RESULTS/<name>.json (or `name` itself when it ends in .json) and return its path."""
    path = Path(name) if name.endswith(".json") else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "started_utc": _START["utc"],
              "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(), **payload}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
    print(f"wrote {path}", flush=True)
    return path
