"""`kexa tokenizer …`: train, stats, encode, decode.

    kexa tokenizer train --input corpus.txt --vocab-size 16384 --out runs/tok [--plain] [--rule kexaone]
    kexa tokenizer train --input cache/corpus --vocab-size 16384 --out runs/tok --stage2-balance 'code=1,*=equalize'
    kexa tokenizer stats --tokenizer runs/tok --input cache/corpus/ko/heldout.txt --json
    kexa tokenizer encode --tokenizer runs/tok --text "안녕하세요"
    kexa tokenizer decode --tokenizer runs/tok --ids 1234 567

Bad arguments (a vocabulary no larger than the 384 reserved + byte tokens, a transition outside the
learned vocabulary, a missing input or tokenizer folder) are one line on stderr, exit code 2, checked
before any file is read or written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from .textfiles import expand, iter_documents


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kexa tokenizer", description="SuperBPE tokenizer: train, inspect, use")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train SuperBPE (default) or plain BPE")
    t.add_argument("--input", nargs="+", required=True, help="text files or folders (.txt/.jsonl/.parquet)")
    t.add_argument("--vocab-size", type=int, required=True, help="final vocabulary, reserved specials included")
    t.add_argument("--out", required=True, help="output folder (tokenizer.json, tokenizer_config.json, …)")
    t.add_argument("--plain", action="store_true", help="ordinary BPE with the same pre-processing")
    t.add_argument("--transition", type=float, default=None,
                   help="stage-1 vocabulary: a size (>1) or the fraction of learned tokens made in stage 1 (default 0.5)")
    t.add_argument("--rule", choices=["superbpe", "kexaone"], default="superbpe",
                   help="stage-2 boundary rule: SuperBPE's (default) or K-EXAONE's released pre-tokenizer")
    t.add_argument("--max-words", type=int, default=4, help="max words per superword token (0 = no cap)")
    t.add_argument("--min-frequency", type=int, default=2)
    t.add_argument("--stage2-balance", default=None, metavar="none|tokens|equalize|NAME=SHARE,…",
                   help="which superwords stage 2 learns over the input groups (the domains of a corpus folder, "
                        "else each --input as given): 'none' (raw pooled counts: original SuperBPE), 'tokens' "
                        "(each group's relative token saving alike), 'equalize' (equal gains over plain BPE), or "
                        "NAME=SHARE|equalize,… with '*' for the rest (default: 'code=1,stem=1,*=equalize')")
    t.add_argument("--utf8-errors", choices=["strict", "replace"], default="strict",
                   help="invalid UTF-8 in inputs: fail with the offset (default) or replace with U+FFFD")
    t.add_argument("--json", action="store_true", help="print a JSON summary last")

    s = sub.add_parser("stats", help="bytes per token and tokens per word of files")
    s.add_argument("--tokenizer", required=True)
    s.add_argument("--input", nargs="+", required=True,
                   help="files/folders; a corpus folder (with manifest.json) gives one row per domain")
    s.add_argument("--split", default="heldout", help="split to read from a corpus folder")
    s.add_argument("--json", action="store_true")

    e = sub.add_parser("encode", help="print the token ids of a text")
    e.add_argument("--tokenizer", required=True)
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--text")
    src.add_argument("--file")
    e.add_argument("--tokens", action="store_true", help="also print the token strings")

    d = sub.add_parser("decode", help="print the text of token ids")
    d.add_argument("--tokenizer", required=True)
    d.add_argument("--ids", nargs="+", type=int, required=True)
    d.add_argument("--skip-special", action="store_true")
    return p


def _check_train_args(args) -> None:
    """Everything `train` can reject without reading a file."""
    from ..cli import UsageError
    from .train import BASE_VOCAB

    if args.vocab_size <= BASE_VOCAB:
        raise UsageError(f"--vocab-size {args.vocab_size}: must exceed {BASE_VOCAB} "
                         f"(128 reserved special tokens + 256 byte tokens)")
    tr = args.transition
    if tr is not None and not (0 < tr <= 1 or (tr > 1 and tr == int(tr) and BASE_VOCAB < tr <= args.vocab_size)):
        raise UsageError(f"--transition {tr}: a fraction in (0, 1] of the learned tokens, or a stage-1 "
                         f"vocabulary size between {BASE_VOCAB} and --vocab-size {args.vocab_size}")
    if args.max_words < 0:
        raise UsageError(f"--max-words {args.max_words}: must be >= 0 (0 = no cap)")
    if args.min_frequency < 1:
        raise UsageError(f"--min-frequency {args.min_frequency}: must be >= 1")
    missing = [p for p in args.input if not Path(p).exists()]
    if missing:
        raise UsageError(f"--input: no such file or directory: {', '.join(missing)}")
    if args.stage2_balance is not None:
        args.stage2_balance = _parse_balance(args.stage2_balance)
    if not args.plain:
        from .textfiles import group_inputs
        from .train import DEFAULT_STAGE2_BALANCE, check_stage2_balance
        if args.stage2_balance is None:
            args.stage2_balance = DEFAULT_STAGE2_BALANCE
        groups = group_inputs(args.input)
        try:
            if len(groups) > 1:
                check_stage2_balance(args.stage2_balance, groups)
        except ValueError as e:
            raise UsageError(f"--stage2-balance: {e}") from e


def _parse_balance(text: str):
    """'none' | 'tokens' | 'equalize' as is, 'a=2,b=equalize,*=1' -> {'a': 2.0, 'b': 'equalize', '*': 1.0}."""
    from ..cli import UsageError
    if text in ("none", "tokens", "equalize"):
        return text
    shares: dict = {}
    for item in text.split(","):
        name, sep, value = item.rpartition("=")
        try:
            share = value if value == "equalize" else float(value)
        except ValueError:
            share = None
        if not sep or not name or share is None:
            raise UsageError(f"--stage2-balance {text!r}: use none, tokens, equalize or NAME=SHARE|equalize,…")
        shares[name] = share
    return shares


def _load_tokenizer(folder: str):
    from ..cli import UsageError
    from .tokenizer import Tokenizer

    if not (Path(folder) / "tokenizer.json").is_file():
        raise UsageError(f"--tokenizer {folder}: no tokenizer.json there (train one with `kexa tokenizer train`)")
    try:
        return Tokenizer.from_pretrained(folder)
    except Exception as e:  # tokenizers raises its own (untyped) exception on a malformed file
        raise UsageError(f"--tokenizer {folder}: cannot load tokenizer.json: {e}") from e


def _stats_inputs(inputs: list[str], split: str) -> dict[str, list[Path]]:
    """name -> files; corpus folders (manifest.json) expand to one entry per domain."""
    groups: dict[str, list[Path]] = {}
    for item in map(Path, inputs):
        manifest = item / "manifest.json"
        if item.is_dir() and manifest.exists():
            info = json.loads(manifest.read_text("utf-8"))
            for domain, entry in info["domains"].items():
                groups[domain] = [item / entry["files"][split]["txt"]]
        else:
            groups[item.name] = expand([item])
    return groups


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    if args.cmd == "train":
        _check_train_args(args)
        from .textfiles import group_inputs
        from .train import DEFAULT_TRANSITION, train_bpe, train_superbpe

        t0 = time.perf_counter()
        if args.plain:
            tok = train_bpe(args.input, args.vocab_size, rule=args.rule, min_frequency=args.min_frequency,
                            errors=args.utf8_errors)
        else:
            tr = DEFAULT_TRANSITION if args.transition is None else args.transition
            tr = int(tr) if tr > 1 else float(tr)
            tok = train_superbpe(group_inputs(args.input), args.vocab_size, transition=tr, rule=args.rule,
                                 max_words=args.max_words or None, min_frequency=args.min_frequency,
                                 errors=args.utf8_errors, stage2_balance=args.stage2_balance)
        out = tok.save_pretrained(args.out)
        summary = {"out": str(out), "vocab_size": tok.vocab_size, "seconds": round(time.perf_counter() - t0, 2),
                   **{k: v for k, v in tok.meta.items() if k != "vocab_size"}}
        print(json.dumps(summary) if args.json else f"wrote {out}/tokenizer.json: {summary}")
        return 0

    tok = _load_tokenizer(args.tokenizer)
    if args.cmd == "stats":
        rows = {}
        for name, files in _stats_inputs(args.input, args.split).items():
            rows[name] = tok.stats(doc for f in files for doc in iter_documents(f))
        if len(rows) > 1:
            total = {k: sum(r[k] for r in rows.values()) for k in ("bytes", "tokens", "words")}
            total["bytes_per_token"] = total["bytes"] / max(total["tokens"], 1)
            total["tokens_per_word"] = total["tokens"] / max(total["words"], 1)
            rows["all"] = total
        if args.json:
            print(json.dumps({"tokenizer": args.tokenizer, "vocab_size": tok.vocab_size, "inputs": rows}))
        else:
            print(f"{'input':<16}{'bytes':>12}{'tokens':>12}{'bytes/token':>13}{'tokens/word':>13}")
            for name, r in rows.items():
                print(f"{name:<16}{r['bytes']:>12}{r['tokens']:>12}{r['bytes_per_token']:>13.3f}{r['tokens_per_word']:>13.3f}")
        return 0
    if args.cmd == "encode":
        text = args.text if args.text is not None else Path(args.file).read_text("utf-8")
        ids = tok.encode(text)
        print(" ".join(map(str, ids)))
        if args.tokens:
            print(" ".join(repr(tok.decode([i])) for i in ids))
        return 0
    if args.cmd == "decode":
        sys.stdout.write(tok.decode(args.ids, skip_special_tokens=args.skip_special) + "\n")
        return 0
    return 2
