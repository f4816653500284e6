"""`kexa data corpus`: build (or reuse) the multilingual corpus.

    kexa data corpus                                  # -> cache/corpus/<domain>/{train,heldout}.{txt,jsonl}
    kexa data corpus --out DIR --input legal=~/my_texts --max-mb 8 --json

Bad arguments (a non-positive size, a held-out fraction outside (0, 1)) and a missing --input
folder: one line on stderr, exit code 2, before anything is built.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="kexa data", description="corpus building")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus", help="build the multilingual corpus from offline sources (cached)")
    c.add_argument("--out", default=None, help="output folder (default: cache/corpus under the repo root)")
    c.add_argument("--input", nargs="+", default=[], metavar="[NAME=]DIR",
                   help="your own folders of .txt/.jsonl/.parquet, one domain each")
    c.add_argument("--domains", nargs="+", default=None, help="built-in domains to build (default: all)")
    c.add_argument("--no-builtin", action="store_true", help="only the --input folders")
    c.add_argument("--max-mb", type=float, default=4.0, help="cap per domain in MB (default 4)")
    c.add_argument("--heldout", type=float, default=0.05, help="held-out fraction (default 0.05)")
    c.add_argument("--fresh", action="store_true", help="rebuild even if a matching build exists")
    c.add_argument("--json", action="store_true", help="print the manifest as JSON last")
    args = p.parse_args(argv)
    from ..cli import UsageError
    if not args.max_mb > 0:
        raise UsageError(f"--max-mb {args.max_mb}: must be > 0")
    if not 0 < args.heldout < 1:
        raise UsageError(f"--heldout {args.heldout}: must lie in (0, 1)")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from .corpus import build_corpus

    info = build_corpus(args.out, inputs=args.input, domains=args.domains, builtin=not args.no_builtin,
                        max_bytes_per_domain=int(args.max_mb * 1e6), heldout_fraction=args.heldout,
                        fresh=args.fresh)
    if args.json:
        print(json.dumps({"root": str(info.root), **info.manifest}))
    else:
        print(f"corpus at {info.root}")
        for d, e in info.manifest["domains"].items():
            f = e["files"]
            print(f"  {d:<6} train {f['train']['bytes'] / 1e6:6.2f} MB ({f['train']['documents']} docs)   "
                  f"heldout {f['heldout']['bytes'] / 1e6:5.2f} MB ({f['heldout']['documents']} docs)")
    return 0
