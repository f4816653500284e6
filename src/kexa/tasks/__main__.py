"""Write task examples as chat JSONL — TRL's `messages` format plus `tools` and the `example` itself —
which `kexa.data.conversations.load_conversations` (and TRL, and `datasets`) read back.

    python -m kexa.tasks arith -n 1000 --lang ko en --tier 1 --split heldout > arith_heldout.jsonl
    python -m kexa.tasks --list
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from . import LANGS, SPLITS, examples, get, names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kexa.tasks", description=__doc__.split("\n\n")[0])
    ap.add_argument("task", nargs="?", help="task name (--list shows them)")
    ap.add_argument("-n", type=int, default=10, help="number of examples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lang", nargs="+", default=list(LANGS), choices=LANGS)
    ap.add_argument("--tier", nargs="+", type=int, default=[1])
    ap.add_argument("--split", default="train", choices=SPLITS)
    ap.add_argument("--no-reasoning", action="store_true", help="assistant turns without reasoning_content")
    ap.add_argument("--list", action="store_true", help="print the task names and their tiers")
    args = ap.parse_args(argv)
    if args.list or not args.task:
        for name in names():
            print(name, "tiers", ",".join(map(str, get(name).tiers)))
        return 0
    try:
        task = get(args.task)
        bad = [t for t in args.tier if t not in task.tiers]
        if bad:
            raise ValueError(f"task {args.task!r} has tiers {task.tiers}, not {bad}")
    except (KeyError, ValueError) as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    for ex in examples(args.task, args.n, args.seed, args.lang, args.tier, args.split):
        row = {"messages": ex.conversation(reasoning=not args.no_reasoning), "tools": ex.tools,
               "example": json.dumps(asdict(ex), ensure_ascii=False)}
        print(json.dumps(row, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
