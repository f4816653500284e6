"""Benchmark: SuperBPE vs plain BPE at equal vocabulary — bytes/token per domain, training time, encode MB/s.

On the held-out split of the corpus (`kexa data corpus`), for each vocabulary size it trains
(a) plain byte-level BPE (stock `tokenizers` trainer) on the default rule's stage-1 pre-tokenizer,
(a') the same on the K-EXAONE rule's stage-1 pre-tokenizer, (b) kexa SuperBPE with the SuperBPE
boundary rule and (c) with K-EXAONE's released pre-tokenizer rule (gains against (a), and for (c) also
against (a')),
all on the same training split, and reports held-out bytes per token per domain, the gain over (a),
training wall time, and encode throughput (MB/s, `encode_batch` over the held-out text, and one
document at a time) of each. Targets (issue 3): at 16K, SuperBPE ≥ 15% more bytes/token than BPE
averaged over domains, no domain worse; encode within 2× of plain BPE.

    .venv/bin/python benchmarks/tokenizer_efficiency.py                       # 8K 16K 32K 64K
    .venv/bin/python benchmarks/tokenizer_efficiency.py --vocab 16384 --sweep 0.3 0.5 0.7
    .venv/bin/python benchmarks/tokenizer_efficiency.py --vocab 16384 131072 --kinds bpe/superbpe superbpe/superbpe \
        --stage2-balance none tokens default                                # the stage-2 balance lever
    .venv/bin/python benchmarks/tokenizer_efficiency.py --summarize benchmarks/results/tokenizer_efficiency.json

The mean over all domains is lifted by `stem` (generated text: +50% at 16K), so every row also has
the mean over the natural-language domains (ko en es de ja vi) apart from code and stem;
`--summarize FILE` recomputes those group means from an existing results file without training and
writes benchmarks/results/tokenizer_efficiency_summary.json.

`--stage2-balance` (one SuperBPE row per value): which superwords stage 2 learns, with the corpus
domains as groups — "default" (languages' gains over plain BPE equalised, code and stem at share 1),
"none" (raw pooled counts, the original SuperBPE), "tokens" (each domain's relative token saving alike),
"equalize" (all domains), or shares "code=1,stem=0.5,*=equalize" (kexa.tokenizer.train.balance_plan).
Every row records the corpus (folder, train MB) and, in `meta`, the stage-1 vocabulary reached
(`stage1_vocab` < `transition` means the corpus ran out of pairs seen twice before the transition).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from kexa.data import CorpusInfo, build_corpus
from kexa.tokenizer import DEFAULT_TRANSITION, train_bpe, train_superbpe
from kexa.tokenizer.train import DEFAULT_STAGE2_BALANCE
from kexa.tokenizer.textfiles import iter_documents


KINDS = ["bpe/superbpe", "bpe/kexaone", "superbpe/superbpe", "superbpe/kexaone"]
NATURAL = ("ko", "en", "es", "de", "ja", "vi")  # the report's six languages; code and stem reported apart


def group_means(gain: dict[str, float]) -> dict[str, float]:
    """Mean gain over all domains, over the natural-language ones, and the rest one by one."""
    natural = [gain[d] for d in NATURAL if d in gain]
    out = {"mean_gain": round(sum(gain.values()) / len(gain), 4),
           "mean_gain_natural_language": round(sum(natural) / len(natural), 4) if natural else None,
           "min_gain_natural_language": min(natural) if natural else None}
    return out | {f"gain_{d}": g for d, g in gain.items() if d not in NATURAL}


def summarize(path: str) -> None:
    """Group means of every SuperBPE row of an existing results file (no training)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _results import write_result
    runs = json.loads(Path(path).read_text())["runs"]
    rows = [{"kind": r["kind"], "vocab": r["vocab"], "actual_vocab": r.get("actual_vocab"),
             "transition_tokens": r["meta"].get("transition"),
             "stage2_balance": balance_name(r["meta"].get("stage2_balance")),
             "gain_by_domain": r["gain"], **group_means(r["gain"])} for r in runs if "gain" in r]
    for r in rows:
        print(f"{r['vocab']:>6} {r['kind']:<18} t={r['transition_tokens']} balance={r['stage2_balance']}: "
              f"all {r['mean_gain']:+.1%}, natural "
              f"language {r['mean_gain_natural_language']:+.1%} (min {r['min_gain_natural_language']:+.1%}), "
              + ", ".join(f"{k[5:]} {v:+.1%}" for k, v in r.items() if k.startswith("gain_") and k != "gain_by_domain"))
    write_result("tokenizer_efficiency_summary", {"source": path, "natural_language_domains": list(NATURAL),
                                                  "baseline": "plain BPE of the same vocabulary (default rule's "
                                                              "stage-1 pre-tokenizer), same training split",
                                                  "rows": rows})


def balance_name(balance) -> str:
    """A row's stage-2 balance as a short string (rows from before the setting existed used raw counts)."""
    if balance is None:
        return "none"
    return balance if isinstance(balance, str) else ",".join(f"{g}={v if isinstance(v, str) else f'{v:g}'}"
                                                             for g, v in balance.items())


def parse_balance(text: str):
    """'default' -> the library default, 'none' / 'tokens' / 'equalize' as is,
    'code=1,*=equalize' -> {'code': 1.0, '*': 'equalize'}."""
    if text == "default":
        return DEFAULT_STAGE2_BALANCE
    if "=" not in text:
        return text
    return {g: v if v == "equalize" else float(v) for g, v in (item.rsplit("=", 1) for item in text.split(","))}


def throughput(tok, docs: list[str]) -> dict[str, float]:
    """Encode speed in MB per CPU-second (process time: robust on a shared, loaded machine) for one
    document at a time, and wall-clock MB/s for `encode_batch` (uses both cores)."""
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    t = time.perf_counter()
    tok.encode_batch(docs)
    batch = mb / (time.perf_counter() - t)
    t = time.process_time()
    for d in docs:
        tok.encode(d)
    single = mb / (time.process_time() - t)
    return {"batch_mb_s": round(batch, 2), "single_mb_cpu_s": round(single, 2)}


def evaluate(tok, held: dict[str, list[str]]) -> dict[str, float]:
    return {d: round(tok.stats(docs)["bytes_per_token"], 4) for d, docs in held.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, nargs="+", default=[8192, 16384, 32768, 65536])
    ap.add_argument("--transition", type=float, default=DEFAULT_TRANSITION)
    ap.add_argument("--sweep", type=float, nargs="*", default=[], help="extra SuperBPE transitions at the first --vocab")
    ap.add_argument("--stage2-balance", nargs="+", default=["default"], metavar="BALANCE",
                    help="one SuperBPE row per value: default | none | tokens | equalize | code=1,*=equalize,…")
    ap.add_argument("--corpus", default=None, help="corpus folder (default: cache/corpus, built if missing)")
    ap.add_argument("--out", default="benchmarks/results/tokenizer_efficiency.json")
    ap.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS, help="which tokenizers to train")
    ap.add_argument("--summarize", default=None, metavar="FILE", help="only the group means of an existing results file")
    args = ap.parse_args()
    if args.summarize:
        return summarize(args.summarize)

    if args.corpus and (Path(args.corpus) / "manifest.json").exists():
        info = CorpusInfo.load(args.corpus)  # an existing corpus folder, as it is
    else:
        info = build_corpus(args.corpus)
    train = info.files("train")
    groups = {d: [str(info.paths[d]["train"])] for d in info.domains}  # stage-2 balance groups: the domains
    held = {d: list(iter_documents(info.paths[d]["heldout"].with_suffix(".jsonl"))) for d in info.domains}
    all_docs = [doc for docs in held.values() for doc in docs]
    train_mb = sum(p.stat().st_size for p in train) / 1e6
    print(f"corpus: {train_mb:.1f} MB train, {sum(len(d.encode()) for d in all_docs) / 1e6:.2f} MB held out, "
          f"domains {info.domains}", flush=True)
    results = {"command": "python " + " ".join(sys.argv),
               "machine": platform.processor() or platform.machine(), "corpus": str(info.root),
               "corpus_max_bytes_per_domain": info.manifest.get("max_bytes_per_domain"),
               "train_mb": round(train_mb, 2), "runs": []}

    def record(kind, vocab, tok, seconds, base=None, transition=None, own_base=None):
        bpt = evaluate(tok, held)
        row = {"kind": kind, "vocab": vocab, "actual_vocab": tok.vocab_size, "transition": transition,
               "train_seconds": round(seconds, 1), "bytes_per_token": bpt, **throughput(tok, all_docs),
               "meta": tok.meta}
        if base is not None:
            gain = {d: round(bpt[d] / base[d] - 1, 4) for d in bpt}
            row["gain"] = gain
            row |= group_means(gain)
            row["min_gain"] = min(gain.values())
        if own_base is not None:
            own = {d: round(bpt[d] / own_base[d] - 1, 4) for d in bpt}
            row["gain_vs_same_rule_bpe"] = own
            row["mean_gain_vs_same_rule_bpe"] = round(sum(own.values()) / len(own), 4)
        results["runs"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "meta"}), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        return bpt

    for i, vocab in enumerate(args.vocab):
        base = {}
        for rule in ("superbpe", "kexaone"):  # plain BPE on each rule's stage-1 pre-tokenization
            if f"bpe/{rule}" in args.kinds:
                t = time.perf_counter()
                tok = train_bpe(train, vocab, rule=rule)
                base[rule] = record(f"bpe/{rule}", vocab, tok, time.perf_counter() - t)
        for rule in ("superbpe", "kexaone"):
            if f"superbpe/{rule}" not in args.kinds:
                continue
            for tr in [args.transition] + (args.sweep if i == 0 and rule == "superbpe" else []):
                for balance in map(parse_balance, args.stage2_balance):
                    t = time.perf_counter()
                    tok = train_superbpe(groups, vocab, transition=tr, rule=rule, stage2_balance=balance)
                    # gains against the default plain BPE; the kexaone row also against its own plain BPE
                    record(f"superbpe/{rule}", vocab, tok, time.perf_counter() - t, base.get("superbpe"), tr,
                           own_base=base.get("kexaone") if rule == "kexaone" else None)

    print("\n| vocab | tokenizer | t | balance | train s | " + " | ".join(info.domains) + " | mean gain | min gain | encode: batch MB/s (wall) / single MB per CPU-s |")
    print("|---|---|---|---|---|" + "---|" * len(info.domains) + "---|---|---|")
    for r in results["runs"]:
        cells = [f"{r['bytes_per_token'][d]:.2f}" + (f" ({r['gain'][d]:+.0%})" if "gain" in r else "") for d in info.domains]
        mean = f"{r['mean_gain']:+.1%}" if "gain" in r else "—"
        if "mean_gain_vs_same_rule_bpe" in r:
            mean += f" (vs bpe/kexaone {r['mean_gain_vs_same_rule_bpe']:+.1%})"
        mn = f"{r['min_gain']:+.1%}" if "gain" in r else "—"
        tr = r["meta"].get("transition", "—")
        bal = balance_name(r["meta"].get("stage2_balance")) if "transition" in r["meta"] else "—"
        print(f"| {r['vocab']} | {r['kind']} | {tr} | {bal} | {r['train_seconds']:.0f} | " + " | ".join(cells)
              + f" | {mean} | {mn} | {r['batch_mb_s']} / {r['single_mb_cpu_s']} |")


if __name__ == "__main__":
    main()
